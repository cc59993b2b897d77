"""enginehub.harness.amqp: a small asyncio AMQP 1.0 engine (pure codec + server connection layer).

Layers: ``codec`` (types), ``performatives`` (composites as data), ``framing`` (frames, headers),
``message`` (message sections), ``connection`` (asyncio protocol, sessions, links, flow control).
"""
