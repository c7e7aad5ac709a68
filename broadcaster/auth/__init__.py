"""Who may connect and what they may see: tokens, claims, origins and admin tokens.

Nothing here knows about sockets: the WebSocket layer asks a :class:`TokenVerifier` for an
:class:`Identity`, an :class:`OriginPolicy` whether a handshake may proceed, and the HTTP app
asks :class:`AdminTokens` whether a request may read the operator views.
"""
