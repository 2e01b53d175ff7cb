"""SHA-256 whose running state can be saved and taken up again in another process.

hashlib cannot export its state, so a whole-file hash advanced chunk by chunk in the web
processes (see app/services/file_hash.py) uses OpenSSL's SHA256_Init/Update/Final through
ctypes instead: the state is OpenSSL's SHA256_CTX, 112 bytes copied as they are. It is as
fast as hashlib (the same library; ctypes releases the GIL during each call).

The saved state is only meaningful to the same OpenSSL build on the same architecture, so
it carries a tag (`FORMAT`) and resuming checks it. Where libcrypto or its SHA256_* symbols
are missing, or the self-test fails, `available()` is False and callers hash from the start
with hashlib instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import platform
import threading

CTX_SIZE = 112  # sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len, 32-bit words
_lock = threading.Lock()
_lib = None
_loaded = False


def _load():
    """libcrypto with SHA256_* set up, or None (tried once per process)."""
    global _lib, _loaded
    with _lock:
        if _loaded:
            return _lib
        _loaded = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
            lib.SHA256_Init.argtypes = [ctypes.c_void_p]
            lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            lib.SHA256_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            for function in (lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final):
                function.restype = ctypes.c_int
            lib.OpenSSL_version.argtypes = [ctypes.c_int]
            lib.OpenSSL_version.restype = ctypes.c_char_p
            version = lib.OpenSSL_version(0) or b""
        except (OSError, AttributeError, ValueError):
            return None
        _lib = lib
        _lib.format = f"openssl-ctx{CTX_SIZE}-{platform.machine()}-{version.decode(errors='replace')}"
        if not _self_test():
            _lib = None
        return _lib


def _self_test() -> bool:
    """A state saved mid-block and resumed gives hashlib's digest."""
    data = bytes(range(256)) * 5
    first = ResumableSha256()
    first.update(data[:77])
    second = ResumableSha256(first.state())
    second.update(data[77:])
    return second.hexdigest() == hashlib.sha256(data).hexdigest()


def available() -> bool:
    return _load() is not None


def state_format() -> str:
    """What a saved state is valid for; '' when unavailable."""
    lib = _load()
    return lib.format if lib is not None else ""


class ResumableSha256:
    """hashlib-like (`update`, `hexdigest`), plus `state()` and a constructor that resumes it."""

    def __init__(self, state: bytes | None = None):
        self._lib = _lib if _loaded and _lib is not None else _load()
        if self._lib is None:
            raise RuntimeError("OpenSSL's SHA256_* functions are not available")
        self._ctx = ctypes.create_string_buffer(CTX_SIZE)
        if state is None:
            self._lib.SHA256_Init(self._ctx)
        elif len(state) != CTX_SIZE:
            raise ValueError("not a saved SHA-256 state")
        else:
            ctypes.memmove(self._ctx, state, CTX_SIZE)

    def update(self, data) -> None:
        """Hash `data`: bytes, or a writable contiguous buffer (bytearray, memoryview of one)."""
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if not size:
            return
        pointer = data if isinstance(data, bytes) else (ctypes.c_char * size).from_buffer(data)
        self._lib.SHA256_Update(self._ctx, pointer, size)

    def state(self) -> bytes:
        return self._ctx.raw

    def hexdigest(self) -> str:
        copy = ctypes.create_string_buffer(self._ctx.raw, CTX_SIZE)
        out = ctypes.create_string_buffer(32)
        self._lib.SHA256_Final(out, copy)
        return out.raw.hex()
