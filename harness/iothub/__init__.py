"""Local Azure IoT Hub emulator: the MQTT 3.1.1 device endpoint that ``azure-iot-device`` connects to.

Modules: ``codec`` (pure MQTT 3.1.1 packets), ``topics`` (IoT Hub topic and property-bag grammar),
``auth`` (SAS tokens, group-key derivation), ``state`` (registry, twins, faults, metrics), ``certs``
(CA + server certificate), ``server`` (asyncio TLS server and the ``IotHubEmulator`` lifecycle class),
``admin`` (local admin HTTP API), ``cli`` (``harness iothub``).
"""
