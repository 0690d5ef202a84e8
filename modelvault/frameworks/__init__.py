"""What the framework flavours share: saving through a store, loading, flavour checks."""
