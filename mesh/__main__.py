"""``python -m mesh``: the ``lamamesh`` command."""

if __name__ == "__main__":  # a spawned slot process re-imports this module as ``__mp_main__``: no CLI then
    from mesh.surface.cli import main

    main()
