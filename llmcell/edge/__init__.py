"""What every HTTP edge of llmcell shares (model server, gateway, admin): the one bounded, strict
JSON body reader, OpenAI-shaped error handlers, server-sent events and the uvicorn protocol.
No engine imports: the gateway and the admin stay light."""
