"""The measuring instruments that the load test, the soak and the bench share: the images they send
(`payloads`), what they aim at (`target`), a closed loop of SDK calls (`closedloop`), the knee of a ramp (`knee`),
and what the server holds and says about itself (`servermemory`, `serverstats`)."""
