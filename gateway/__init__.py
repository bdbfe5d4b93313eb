"""nakhon gateway: the device registry, broker provisioning (Mosquitto dynamic security), HTTP API, tokens, audit."""
