"""The data path: attached VDIs served over NBD by nbdkit, plus a file-like API.

Modules: `export` (one served chain behind a pause gate), `control` (the pause protocol: a
line-based JSON control socket), `plugin` (the nbdkit Python plugin), `server` (process
management on the driver side), `fileobj` (in-process file-like access). See
`docs/data-path.md`.

Everything that runs inside nbdkit (`export`, `control`, `plugin`) is standard library only,
because nbdkit embeds Debian's `/usr/bin/python3`, not the project's virtualenv. This package
`__init__` imports nothing for the same reason.
"""
