"""Typed errors of the IoT Hub emulator; each wire error carries its MQTT code as a class attribute."""

from __future__ import annotations


class IotHubEmulatorError(Exception):
    """Base class of every error raised by ``enginehub.harness.iothub``."""


# --- codec (bytes <-> packets) -------------------------------------------------------------------


class MqttCodecError(IotHubEmulatorError):
    """The bytes are not a valid MQTT 3.1.1 packet. The server closes the connection."""


class MalformedPacketError(MqttCodecError):
    """A field is out of the MQTT 3.1.1 grammar (bad flags, bad UTF-8, truncated field, ...)."""


class PacketTooLargeError(MqttCodecError):
    """The remaining length exceeds the configured maximum packet size (or the 4-byte varint)."""


#: The closed tuple of errors the decoder may raise on arbitrary input (fuzz contract).
CODEC_ERRORS: tuple[type[MqttCodecError], ...] = (MalformedPacketError, PacketTooLargeError)


# --- topics / property bags ----------------------------------------------------------------------


class TopicError(IotHubEmulatorError):
    """A topic or property bag that is not part of the IoT Hub device grammar."""


class UnsupportedTopicError(TopicError):
    """A topic IoT Hub knows but this emulator does not implement (strict mode)."""


# --- CONNECT / auth ------------------------------------------------------------------------------


class ConnectRefused(IotHubEmulatorError):
    """CONNECT rejected; ``code`` is the CONNACK return code sent before closing."""

    code = 5

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class UnacceptableProtocolVersion(ConnectRefused):
    code = 1


class IdentifierRejected(ConnectRefused):
    code = 2


class ServerUnavailable(ConnectRefused):
    code = 3


class BadUsernameOrPassword(ConnectRefused):
    code = 4


class NotAuthorized(ConnectRefused):
    """Bad/expired SAS token, unknown or disabled device: the SDK raises ``CredentialError``."""

    code = 5


class AuthError(NotAuthorized):
    """The SAS token does not authenticate the device (signature, audience, expiry, format)."""


# --- registry ------------------------------------------------------------------------------------


class RegistryError(IotHubEmulatorError):
    """Bad registry operation (HTTP status as ``status``)."""

    status = 400


class DeviceNotFound(RegistryError):
    status = 404


class DeviceExists(RegistryError):
    status = 409


# --- session ------------------------------------------------------------------------------------


class ProtocolViolation(IotHubEmulatorError):
    """The device broke an IoT Hub rule (QoS 2, other device's topic, oversize): connection closed."""


# --- service API (REST) ----------------------------------------------------------------------------


class ServiceError(RegistryError):
    """A service-API error: HTTP ``status`` and the hub's ``error_code`` (the ``iothub-errorcode`` header)."""

    status = 400
    error_code = "ArgumentInvalid"
    numeric_code = 400004


class Unauthorized(ServiceError):
    status = 401
    error_code = "IotHubUnauthorizedAccess"
    numeric_code = 401002


class PreconditionFailed(ServiceError):
    status = 412
    error_code = "PreconditionFailed"
    numeric_code = 412002


class DeviceNotOnline(ServiceError):
    status = 404
    error_code = "DeviceNotOnline"
    numeric_code = 404103


class GatewayTimeout(ServiceError):
    status = 504
    error_code = "GatewayTimeout"
    numeric_code = 504101


class QueueDepthExceeded(ServiceError):
    """A device's cloud-to-device queue is full (the hub keeps at most 50 messages per device)."""

    status = 403
    error_code = "DeviceMaximumQueueDepthExceeded"
    numeric_code = 403004
