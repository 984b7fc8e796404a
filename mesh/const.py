"""Every interval, timeout and limit in one place, each with its unit.

Read these as ``const.NAME`` at call time (or pass them in through ``Config``): a
``from .const import X`` copies the value and a test could not shrink it.
"""

from __future__ import annotations

PROTOCOL_VERSION = 7  # wire protocol version: the `v` of every message and the mDNS TXT record

# ports
DEFAULT_TASK_PORT = 5555  # the node's client-facing ROUTER; backend ROUTER port + 1, gossip PUB port + 2

# discovery, membership and election (the defaults of the matching ``Config`` fields)
MDNS_SERVICE = "_lamamesh._tcp.local."  # mDNS service type every node advertises
TICK = 0.05  # s between two membership/election evaluations of a node (and the leader's sweeps)
HEARTBEAT_INTERVAL = 0.3  # s between two heartbeats a node publishes (design: 250-500 ms)
DEAD_TIMEOUT = 2.0  # s of silence after which a peer is dead
ELECTION_WAIT = 1.0  # s a new node listens for a leader before it may claim leadership itself
PEER_PROBE_INTERVAL = 1.0  # s between pings to a static --peer not yet heard
PEER_RECHECK_INTERVAL = 5.0  # s between pings to a static --peer that is alive (it may have restarted)
LEAVE_LINGER_MS = 1000  # ms a leaving node keeps unsent answers (results, hand-backs) before closing
TERM_CEILING = 2**30  # a heartbeat with a larger term is ignored: a node never adopts a term whose +1s the wire
# refuses (protocol.MAX_TERM = 2**31), however many elections follow
TERM_LEAP = 1024  # a heartbeat whose term is this far above every other live member's is ignored (terms grow by
# one per election; a real mesh never leaps so far, a forged heartbeat does). A node alone accepts any term
# up to TERM_CEILING, so it can join a long-lived mesh.
MAX_MEMBERS = 256  # members one node keeps in its view (config max_members); a new id beyond it is ignored
GOSSIP_UNHEARD_DROP = 10.0  # s a gossip endpoint learned from a peer's list may stay unheard before it is dropped
FORGET_AFTER = 60.0  # s a dead peer is kept in the view (shown as dead) before it is forgotten
CLIENT_FIND_LEADER_TIMEOUT = 6.0  # s a client waits for a reachable mesh to name a leader
CLIENT_FAILOVER_PROBE = 0.4  # s a failing-over client waits for each member's answer
CLIENT_FAILOVER_RETRY = 0.05  # s between two rounds of asking the members who leads
CLIENT_PING_INTERVAL = 0.25  # s between a client's pings to the leader while tasks are pending
CLIENT_GONE_AFTER = 6.0  # s a leader hears nothing (no ping, no submit) from a client before it drops its tasks
# (a client pings every CLIENT_PING_INTERVAL while it has tasks; 6 s leaves room for a loop busy writing a result)
CANCEL_LINGER_MS = 500  # ms a closing client gives its Cancel to reach the leader
CLIENT_RESEND_AFTER = 30.0  # s a task may go unanswered while its leader answers pings before it is sent again
CLIENT_BACKLOG_S = 6.0  # s of its measured throughput a client keeps in flight, in bytes: when its own link is the
# bottleneck, the last task's bytes then reach their worker well within DATA_WAIT (12 MB photos on 100 Mbit/s with 4
# nodes: 16 placed at once, the last bytes came after 15 s, their holds expired, 25 were sent again, 3 failed)
CLIENT_BYTES_FLOOR = 16 * 1024 * 1024  # bytes a client may keep in flight before it has measured (1 task at least)
CLIENT_REACH_WAIT = 0.25  # s a batch (window > 1) waits for its connections to the mesh's workers before bytes flow
CLIENT_REACH_MAX = 16  # workers a batch connects to before it starts (the first of the leader's list of members)
# (one opened while the client's link is full of another's bytes had its handshake or first segment dropped by the
# link's queue and waited out TCP's initial 1 s retransmission timeout: 1 MiB on 100 Mbit/s, 4 nodes, 2 clients, a
# crew's second worker got no bytes for 2.1-3 s and its first worker ran 82 of 100 tasks, 0.87-0.89 of the limit)
CLIENT_MDNS_BROWSE = 1.5  # s a client browses mDNS for a mesh when no --peer is given and none is local

# node and client timings
CLIENT_PROBE_TIMEOUT = 1.0  # s a client waits for a node to answer a ping before falling back
SHUTDOWN_GRACE = 15.0  # s a leaving node waits for in-flight tasks before answering them with an error
SLOT_START_TIMEOUT = 60.0  # s a slot process has to load its model and report ready
SLOT_MAX_RETRIES = 2  # times a task is retried after its slot process crashed
WORKER_PREFETCH = 3  # tasks a worker may hold beyond its free slots (credit-based flow): enough that bytes
# on their way over a LAN keep its slots fed (1 left a 100 Mbit/s client link half idle: bench/lan.py)
READY_MEASURED_MAX = 64  # "model@size-class" slot times a worker keeps and sends in its Ready
WORKER_PREFETCH_MAX = 16  # ... for short tasks whose bytes come at once: PREFETCH_COVER_MS of its slots' work
PREFETCH_COVER_MS = 12.0  # (a task's turn = its slot time + its bytes' least time to come: 100 ms tasks, or
# 64 KiB over 100 Mbit/s, 5.2 ms, keep 3; null tasks on loopback go to 16: a deeper pipeline sends their
# control messages in fewer, larger bundles, loopback 64 KiB +24% tasks/s, -22% CPU a task. Deeper on that
# LAN only queued bytes on the client's link: 1 ms tasks 0.87-0.88 of the limit against 0.91-0.92)
TICKET_TTL = 2.0  # s a worker holds a slot for a client's next task (a ticket), plus 2x a task's expected finish
TICKET_TTL_MAX = 30.0  # s at most (a slow CPU model's tasks take seconds); 0 TICKET_TTL: no tickets
TICKETS_SPENT_KEPT = 1024  # tickets whose task was done before its Submit came, remembered to ignore that Submit
TICKETS_LAPSED_KEPT = 1024  # tickets a worker remembers (for DATA_WAIT) after their hold ended unused: a task
# whose bytes come late under one runs at once instead of waiting DATA_WAIT to be sent again
DATA_WAIT = 10.0  # s a worker holds a slot for a task whose bytes have not come (then frees it, tells the leader)
DATA_MIN_RATE = 1024 * 1024  # bytes/s: the slowest link a task's bytes are waited for at (8.4 Mbit/s, a poor
# Wi-Fi): a hold waits DATA_WAIT + size / DATA_MIN_RATE (12 MB: 21 s). With DATA_WAIT alone, a 12 MB photo on an
# 8 Mbit/s link (12 s) lost its hold before its bytes came, and every task was placed and sent twice
DATA_STAGED_MAX = 64  # tasks' bytes a worker keeps that came before the leader's Task (each kept DATA_WAIT at most)
TASK_DEADLINE_FACTOR = 4.0  # a placed task's deadline: DATA_WAIT + this x its expected finish (queue + service)
TASK_DEADLINE_MIN = 30.0  # s: the floor of that deadline (a measured 50 ms task still gets 30 s)
TASK_DEADLINE_MAX = 600.0  # s: its cap, and the deadline of a kind of task no worker has measured yet
TASK_TRIES = 3  # placements of a task that went past its deadline before the client gets a timeout error
SUBMIT_TIMEOUT = TASK_TRIES * TASK_DEADLINE_MAX + 60.0  # s `submit IMAGE MASK` waits by default: every
# placement's longest deadline, then a minute of queue (a batch has no overall default)
MAX_WORKER_SLOTS = 256  # slots the leader believes one worker has (a Ready claiming more is capped)
CREW_START = 2  # workers a client's crew (the workers its tasks go to) starts with: a second connection opened
# later, behind a link already full of the first one's bytes, got almost nothing for 1-2 s (bench/lan.py: one
# FIFO queue at each host's link)
CREW_HEADROOM = 1.3  # a crew takes in at once as many workers as its client's link can keep busy, times this
CREW_BUSY = 0.85  # ... and more while its members' slots are busy this share of the time on average (a client's
# link, not its workers, is what holds it back below that),
CREW_WAITS = 1.0  # or while its tasks' bytes wait there this many of their model times for a slot (short tasks,
# whose workers' own handling is a good part of a turn, leave the slots idle while the worker is the limit)
TRANSFER_ESTIMATE_STALE = 2.0  # s after which an idle worker's unrefreshed transfer estimate is not trusted
PLAN_DEPTH = 512  # queued tasks the leader looks at in one placement pass
DONE_HOLD_MAX = 0.02  # s a worker whose slots have their next tasks in hand may hold a Done back (Worker._report)
BURST_MAX = 64  # messages already waiting that the leader handles before one placement pass
DATA_STAGED_BYTES = 512 * 1024 * 1024  # bytes of those kept at most (the oldest go first, their clients told retry)
DATA_TRIES = 3  # times the leader places a task whose bytes never reached the worker before failing it
WORKER_SWEEP = 0.25  # s between a worker's checks for slots held too long without bytes
OPEN_FILES_WANTED = 65536  # the open-file soft limit `join` raises itself to (at most the hard limit)
ROUTER_SNDHWM = 1024  # messages a node queues for one peer that does not read (then drops them)
TASK_PORT_SNDHWM = 256  # the same on the task port, where clients get places and results: a client's window
# is 64 tasks, so a reading client never comes near it, and one that never reads holds at most 256 of its
# answers in the node's memory (3,000 unread 64 KiB results: +63 MiB at 1,024, about +15 MiB at 256)
GOSSIP_HWM = 100  # heartbeats buffered per gossip peer before the oldest are dropped
SOCKET_LINGER = 0  # ms pending messages are kept when a socket closes

# model copy between peers
MODEL_CHUNK = 4 * 1024 * 1024  # bytes of one model chunk sent between peers
MODEL_CHUNK_TIMEOUT = 5.0  # s to wait for a chunk before asking another peer (the copy resumes)
MODEL_COPY_RETRY = 10.0  # s before a failed copy is tried again

# status, HTTP and logs
STATUS_RECENT = 20  # latest task outcomes a leader keeps for status
RATE_WINDOW = 60.0  # s over which a node's tasks/s is averaged (status, /metrics)
STATUS_REFRESH = 0.5  # s between two snapshots the live status screen asks for
STATUS_MAX_BYTES = 60 * 1024  # bytes of a status answer: rows past it are left out and counted (header limit 64 KiB)
STATUS_TIMEOUT = 2.0  # s a status request waits before the client looks for the leader again
HTTP_MAX_BODY = 96 * 1024 * 1024  # bytes of one HTTP request body (base64 image + mask)
PROGRESS_LINE_EVERY = 5.0  # s between two progress lines of a batch when stderr is not a terminal
HTTP_PARSE_CONCURRENCY = 2  # request bodies parsed at once, in threads (a 90 MiB JSON body takes 2-3 s)
MAX_NAME_CHARS = 256  # characters of a model name or session id a client may send
HTTP_TASK_TIMEOUT = 300.0  # s an HTTP inpaint request waits for its result
HTTP_HEADER_TIMEOUT = 15.0  # s a connection may take to send a whole request head (and may sit idle after one)
HTTP_BODY_GRACE = 30.0  # s a request body may take, plus 1 s per MiB it declares (any LAN moves 1 MiB/s)

# limits on what comes from the network or the disk
MAX_HEADER_BYTES = 64 * 1024  # bytes of the msgpack header frame
MAX_FRAME_BYTES = 256 * 1024 * 1024  # bytes of one image frame
MAX_FRAMES = 4  # frames in one message
BUNDLE_MAX = 64  # messages without data frames sent to one peer as one ZeroMQ message (protocol.encode_bundle)
MAX_LIST_ITEMS = 1024  # items in one list or map field of a message (members, EWMA table)
MAX_IMAGE_PIXELS = 100_000_000  # pixels of a decoded image (decompression-bomb guard)
MAX_QUEUED_PER_CLIENT = 4096  # tasks one client may have queued at a node
MAX_RESULT_BYTES = 512 * 1024 * 1024  # bytes of one encoded result
BAD_MESSAGE_LOG_INTERVAL = 60.0  # s between log lines about one peer's bad messages
BAD_MESSAGE_SEEN_MAX = 512  # peers remembered by the rate-limited logger

# pipeline (IOPaint's defaults)
MASK_THRESHOLD = 127  # a mask pixel >= this is filled
MASK_WARN_SHARE = 0.5  # a mask filling more than this share of the image gets a warning (inverted?)
HD_CROP_TRIGGER = 800  # px: CROP applies when the image's longer side exceeds this
HD_CROP_MARGIN = 128  # px added around each mask blob's box
HD_RESIZE_LIMIT = 1280  # px: RESIZE scales the longer side down to this
JPEG_QUALITY = 95  # quality of JPEG output
