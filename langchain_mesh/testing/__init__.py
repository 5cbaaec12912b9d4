"""Offline test tools: a scripted connection and (later) local servers speaking each provider wire format."""
