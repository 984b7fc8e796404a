"""Every interval, timeout and limit in one place, each with its unit.

Read these as ``const.NAME`` at call time (or pass them in through ``Config``): a
``from .const import X`` copies the value and a test could not shrink it.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1  # wire protocol version: the `v` of every message and the mDNS TXT record

# ports
DEFAULT_TASK_PORT = 5555  # the node's client-facing ROUTER; the backend ROUTER takes port + 1

# node and client timings
CLIENT_PROBE_TIMEOUT = 1.0  # s a client waits for a node to answer a ping before falling back
SHUTDOWN_GRACE = 15.0  # s a leaving node waits for in-flight tasks before answering them with an error
SLOT_START_TIMEOUT = 60.0  # s a slot process has to load its model and report ready
SLOT_MAX_RETRIES = 2  # times a task is retried after its slot process crashed
WORKER_PREFETCH = 1  # tasks a worker may hold beyond its free slots (credit-based flow)
SOCKET_LINGER = 0  # ms pending messages are kept when a socket closes

# limits on what comes from the network or the disk
MAX_HEADER_BYTES = 64 * 1024  # bytes of the msgpack header frame
MAX_FRAME_BYTES = 256 * 1024 * 1024  # bytes of one image frame
MAX_FRAMES = 4  # frames in one message
MAX_IMAGE_PIXELS = 100_000_000  # pixels of a decoded image (decompression-bomb guard)
MAX_QUEUED_PER_CLIENT = 4096  # tasks one client may have queued at a node
MAX_RESULT_BYTES = 512 * 1024 * 1024  # bytes of one encoded result
BAD_MESSAGE_LOG_INTERVAL = 60.0  # s between log lines about one peer's bad messages
BAD_MESSAGE_SEEN_MAX = 512  # peers remembered by the rate-limited logger

# pipeline (IOPaint's defaults)
MASK_THRESHOLD = 127  # a mask pixel >= this is filled
HD_CROP_TRIGGER = 800  # px: CROP applies when the image's longer side exceeds this
HD_CROP_MARGIN = 128  # px added around each mask blob's box
HD_RESIZE_LIMIT = 1280  # px: RESIZE scales the longer side down to this
JPEG_QUALITY = 95  # quality of JPEG output
