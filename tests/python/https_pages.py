#!/usr/bin/env python3
"""Serves a directory over HTTPS on a free port of 127.0.0.1.

The browser test maps a web site's host name to this server
(Chromium's --host-resolver-rules, certificate errors ignored), so that a page
it serves has that site's origin, e.g. https://mryslab.github.io.

Usage: https_pages.py CERT_PEM KEY_PEM DIRECTORY
Prints "SERVING <port>" on stdout once it listens; serves until killed.
"""

import functools
import http.server
import ssl
import sys


def main(cert, key, directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("SERVING %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:4])
