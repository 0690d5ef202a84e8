"""Pure building blocks: bytes in, bytes out, no I/O."""
