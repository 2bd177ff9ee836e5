# cython: language_level=3
"""bastion_fast._pump — the compiled data path: RFC 6455 frame codec and the socket ⇄ WebSocket pump.

One compilation unit (uvloop's pattern) so every cdef call between codec and pump is a direct C call:

* ``_codec.pxi``  — masking (``_mask.h``), FrameEncoder, FrameDecoder, close-payload helpers
* ``_splice.pxi`` — Splice: the two asyncio protocols that join a byte stream and a WebSocket

The pure-Python twin (``bastion_fast._pump_py``) defines the behaviour; this module must match it exactly
(tests run every case on both).
"""

IMPLEMENTATION = "cython"

include "_codec.pxi"
include "_splice.pxi"
