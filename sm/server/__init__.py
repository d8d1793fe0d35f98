"""`sm serve`: the SMAPIv1 commands of every SR type and the `sm.api` layer over XML-RPC
(docs/server.md).

    sm.server.auth      the token (generated at first start, 0600)
    sm.server.methods   method name -> StorageManager method / SMAPIv1 driver call
    sm.server.http      HTTP(S) on a Unix socket or TCP: one reader, a pool of workers
    sm.server.listen    what the reader and the workers share; the listening socket
    sm.server.conn      a connection as the reader holds it, and its non-blocking I/O
    sm.server.wire      HTTP request heads: parsing and the checks before a worker
    sm.server.worker    a worker: executes the calls of one connection
    sm.server.client    `connect()`: an `xmlrpc.client.ServerProxy` with the token (and Unix
                        sockets)
"""

from __future__ import annotations

__all__ = ["client", "http", "methods"]
