"""Payload encryption of the activity worker, the daemon's (src/codec/ of the repository;
docs/operations.md, "Encrypting payloads"): what the worker sends to Temporal (the firing's
result, its failure messages and stack traces) is AES-256-GCM encrypted, and what it receives
(the firing with its context) decrypted.

The format is the one of Temporal's encryption samples (samples-python and samples-go
``encryption``), so that the daemon and Temporal's tools read it: metadata ``encoding:
binary/encrypted`` and ``encryption-key-id: <id>``; data the 12-byte nonce, then the
ciphertext and the 16-byte tag of the original payload serialized as a
``temporal.api.common.v1.Payload``. Every configured key decrypts (by the payload's key id),
the current one encrypts; a payload that is not ``binary/encrypted`` passes through, so firings
started before encryption was turned on still perform.

The keys are the daemon's (``TRIGGER_RELAY_CODEC_KEYS_FILE`` and
``TRIGGER_RELAY_CODEC_CURRENT_KEY_ID``), read and checked by :func:`trigger_relay.conf.codec_keys`
(so that the system check, in web processes, imports neither temporalio nor cryptography).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Final

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.converter import PayloadCodec

from trigger_relay.conf import KEYS_FILE
from trigger_relay.conf import KeyRing

ENCODING: Final = "encoding"
ENCRYPTED: Final = b"binary/encrypted"
KEY_ID: Final = "encryption-key-id"
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16


class DecryptError(ValueError):
    """A payload cannot be decrypted with the configured keys."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM with key ids, in the format of Temporal's encryption samples."""

    def __init__(self, ring: KeyRing) -> None:
        # Imported here: the web processes parse key files (system checks) but never encrypt.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        super().__init__()
        self.ring = ring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.ring.current].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={ENCODING: ENCRYPTED, KEY_ID: self.ring.current.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        from cryptography.exceptions import InvalidTag

        if payload.metadata.get(ENCODING) != ENCRYPTED:
            return payload
        if KEY_ID not in payload.metadata:
            raise DecryptError("a payload marked binary/encrypted has no encryption-key-id")
        key_id = payload.metadata[KEY_ID].decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptError(
                f"a payload is encrypted with key id {key_id!r}, which is not configured "
                f"(keys: {', '.join(self.ring.key_ids)}); add that key to {KEYS_FILE}"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise DecryptError(
                f"a payload encrypted with key id {key_id!r} has {len(data)} bytes, fewer than "
                "a nonce and a tag"
            )
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise DecryptError(
                f"a payload encrypted with key id {key_id!r} does not decrypt: the key of that "
                "id is not the one that encrypted it, or the payload was altered"
            ) from None
        return Payload.FromString(plain)


def data_converter(ring: KeyRing | None) -> DataConverter:
    """The worker's data converter: the SDK's default without keys; with them, the codec, and
    failures whose message and stack trace travel in an encoded (so encrypted) attribute: a
    site's exception text is personal data too. The daemon decodes them (its workflow records
    the real message as the row's ``last_error``)."""
    default = DataConverter.default
    if ring is None:
        return default
    return dataclasses.replace(
        default,
        payload_codec=EncryptionCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
