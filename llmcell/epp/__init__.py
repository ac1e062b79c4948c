"""The endpoint picker (`llmcell epp`): the cell's routing served to a Gateway API inference
gateway over Envoy's ext_proc protocol, so that Envoy carries the traffic and the cell decides
where it goes (picker.py: the decision; service.py: the protocol; main.py: the process)."""
