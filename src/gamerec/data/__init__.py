"""Raw Amazon readers, the synthetic generator and the prepare step."""
