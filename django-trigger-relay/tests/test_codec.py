"""Payload encryption of the activity worker (trigger_relay/worker/codec.py,
conf.codec_keys): the key file and its errors, the worker's refusal to start with bad keys,
the system check, key rotation, and the wire format of Temporal's encryption samples, which
the daemon writes too.

The end-to-end behaviour (a real dev server's history holds no plaintext, both workers
decrypt, rotation across restarts, the daemon's codec endpoint) is test_e2e_codec.py's.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.test import override_settings
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from trigger_relay import conf
from trigger_relay.checks import check_codec_keys_setting
from trigger_relay.worker import codec
from trigger_relay.worker.settings import ConfigError
from trigger_relay.worker.settings import WorkerSettings

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def key_file(tmp_path: Path, text: str, name: str = "keys") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def ring(current: str = "a", **keys: bytes) -> conf.KeyRing:
    return conf.KeyRing(keys=keys or {"a": KEY_A, "b": KEY_B}, current=current)


def json_payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


# -- Temporal's sample format, written here from its description (samples-python and
# samples-go ``encryption``): what Temporal's own tools and samples read and write. --------


def sample_encode(key_id: str, key: bytes, payload: Payload) -> Payload:
    nonce = os.urandom(12)
    return Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": key_id.encode()},
        data=nonce + AESGCM(key).encrypt(nonce, payload.SerializeToString(), None),
    )


def sample_decode(key_id: str, key: bytes, payload: Payload) -> Payload:
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert payload.metadata["encryption-key-id"].decode() == key_id
    return Payload.FromString(AESGCM(key).decrypt(payload.data[:12], payload.data[12:], None))


# -- the key file -----------------------------------------------------------------------


def test_a_key_file_is_read(tmp_path: Path) -> None:
    path = key_file(
        tmp_path, f"# rotated in November\n\n2026-05 = {b64(KEY_A)}\n2026-11={b64(KEY_B)}\n"
    )
    keys = conf.load_keys(path, " 2026-11 ")
    assert keys is not None
    assert keys.key_ids == ["2026-05", "2026-11"]
    assert keys.current == "2026-11"
    assert keys.keys["2026-05"] == KEY_A
    assert b64(KEY_A) not in repr(keys)
    assert "KEY" not in repr(keys)
    assert conf.load_keys(None, None) is None
    assert conf.load_keys(None, "  ") is None


@pytest.mark.parametrize(
    ("text", "current", "expected"),
    [
        ("just-a-key", "a", "line 1: not `<key id>=<base64 of 32 bytes>`"),
        # A key pasted without its id: its padding is no separator, and it is not quoted.
        (b64(KEY_A), "a", "line 1: not `<key id>=<base64 of 32 bytes>`"),
        (b64(KEY_A[:16]), "a", "line 1: not `<key id>=<base64 of 32 bytes>`"),
        (f"a b={b64(KEY_A)}", "a", "line 1: the key id is not 1 to 64"),
        (f"a={b64(KEY_A)}\na={b64(KEY_B)}", "a", "line 2: key id 'a' appears twice"),
        ("# c\na=not base64!", "a", "line 2: the key is not base64"),
        (f"a={b64(KEY_A[:16])}", "a", "line 1: the key of 'a' is 16 bytes; AES-256-GCM takes 32"),
        ("# nothing yet\n", "a", "holds no key"),
        (f"a={b64(KEY_A)}", "b", "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID='b' names no key of"),
    ],
)
def test_a_malformed_key_file_is_named_without_its_keys(
    tmp_path: Path, text: str, current: str, expected: str
) -> None:
    path = key_file(tmp_path, text)
    with pytest.raises(conf.KeyFileError) as raised:
        conf.load_keys(path, current)
    message = str(raised.value)
    assert expected in message
    assert str(path) in message
    assert b64(KEY_A).rstrip("=") not in message
    assert b64(KEY_A[:16]).rstrip("=") not in message


def test_half_a_configuration_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, f"a={b64(KEY_A)}")
    with pytest.raises(conf.KeyFileError, match="TRIGGER_RELAY_CODEC_CURRENT_KEY_ID is not"):
        conf.load_keys(path, None)
    with pytest.raises(conf.KeyFileError, match="TRIGGER_RELAY_CODEC_KEYS_FILE is not"):
        conf.load_keys(None, "a")
    with pytest.raises(conf.KeyFileError, match="cannot read"):
        conf.load_keys(tmp_path / "missing", "a")


def test_the_worker_refuses_to_start_with_bad_keys(tmp_path: Path) -> None:
    """``WorkerSettings`` is what ``manage.py trigger_relay_worker`` loads first; a
    ``ConfigError`` stops it with its message (test_worker_settings.py)."""
    good = key_file(tmp_path, f"a={b64(KEY_A)}", "good")
    short = key_file(tmp_path, f"a={b64(KEY_A[:31])}", "short")
    settings = WorkerSettings.from_env({conf.KEYS_FILE: str(good), conf.CURRENT_KEY_ID: "a"})
    assert settings.codec_keys is not None
    assert settings.codec_keys.current == "a"
    assert b64(KEY_A) not in repr(settings)
    assert WorkerSettings.from_env({}).codec_keys is None
    for environ, expected in [
        ({conf.KEYS_FILE: str(short), conf.CURRENT_KEY_ID: "a"}, "31 bytes"),
        ({conf.KEYS_FILE: str(good)}, "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID is not"),
        ({conf.CURRENT_KEY_ID: "a"}, "TRIGGER_RELAY_CODEC_KEYS_FILE is not"),
        ({conf.KEYS_FILE: str(good), conf.CURRENT_KEY_ID: "b"}, "names no key"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            WorkerSettings.from_env(environ)


def test_django_settings_configure_the_keys_and_the_environment_wins(tmp_path: Path) -> None:
    good = key_file(tmp_path, f"a={b64(KEY_A)}\nb={b64(KEY_B)}", "good")
    from_django = WorkerSettings.from_django(
        {}, _Settings(TRIGGER_RELAY_CODEC_KEYS_FILE=good, TRIGGER_RELAY_CODEC_CURRENT_KEY_ID="a")
    )
    assert from_django.codec_keys is not None
    assert from_django.codec_keys.current == "a"
    environment_wins = WorkerSettings.from_django(
        {conf.CURRENT_KEY_ID: "b"},
        _Settings(TRIGGER_RELAY_CODEC_KEYS_FILE=good, TRIGGER_RELAY_CODEC_CURRENT_KEY_ID="a"),
    )
    assert environment_wins.codec_keys is not None
    assert environment_wins.codec_keys.current == "b"
    with pytest.raises(ConfigError, match=r"TRIGGER_RELAY_CODEC_KEYS_FILE is 42 \(type int\)"):
        WorkerSettings.from_django({}, _Settings(TRIGGER_RELAY_CODEC_KEYS_FILE=42))


class _Settings:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def test_the_system_check_names_bad_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = key_file(tmp_path, f"a={b64(KEY_A)}", "good")
    bad = key_file(tmp_path, "a=short", "bad")
    monkeypatch.delenv(conf.KEYS_FILE, raising=False)
    monkeypatch.delenv(conf.CURRENT_KEY_ID, raising=False)
    assert check_codec_keys_setting() == []
    with override_settings(
        TRIGGER_RELAY_CODEC_KEYS_FILE=str(good), TRIGGER_RELAY_CODEC_CURRENT_KEY_ID="a"
    ):
        assert check_codec_keys_setting() == []
    with override_settings(TRIGGER_RELAY_CODEC_KEYS_FILE=good):  # no current key id
        (error,) = check_codec_keys_setting()
        assert error.id == "trigger_relay.E015"
        assert "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID is not" in error.msg
    monkeypatch.setenv(conf.KEYS_FILE, str(bad))
    monkeypatch.setenv(conf.CURRENT_KEY_ID, "a")
    with override_settings(TRIGGER_RELAY_CODEC_KEYS_FILE=str(good)):
        (error,) = check_codec_keys_setting()  # the environment's file wins
        assert "the key is not base64" in error.msg


# -- the codec --------------------------------------------------------------------------


def test_a_payload_round_trips_and_hides_its_data() -> None:
    encryption = codec.EncryptionCodec(ring())
    plain = json_payload('{"user_pk": "secret-user"}')
    sealed = encryption.encrypt(plain)
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert sealed.metadata["encryption-key-id"] == b"a"
    assert b"secret-user" not in sealed.SerializeToString()
    assert len(sealed.data) == 12 + len(plain.SerializeToString()) + 16
    assert encryption.decrypt(sealed) == plain
    assert encryption.encrypt(plain).data != encryption.encrypt(plain).data  # fresh nonces
    assert encryption.decrypt(json_payload("7")) == json_payload("7")  # not ours: as it is


def test_rotation_every_key_decrypts_the_current_one_encrypts() -> None:
    old = codec.EncryptionCodec(ring("a")).encrypt(json_payload("1"))
    rotated = codec.EncryptionCodec(ring("b"))
    assert rotated.decrypt(old) == json_payload("1")
    new = rotated.encrypt(json_payload("2"))
    assert new.metadata["encryption-key-id"] == b"b"
    only_a = codec.EncryptionCodec(conf.KeyRing(keys={"a": KEY_A}, current="a"))
    with pytest.raises(
        codec.DecryptError, match=r"key id 'b', which is not configured \(keys: a\)"
    ):
        only_a.decrypt(new)


def test_altered_or_foreign_payloads_are_refused() -> None:
    encryption = codec.EncryptionCodec(ring())
    sealed = encryption.encrypt(json_payload("7"))
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(codec.DecryptError, match="does not decrypt"):
        encryption.decrypt(altered)
    other_key = codec.EncryptionCodec(conf.KeyRing(keys={"a": KEY_B}, current="a"))
    with pytest.raises(codec.DecryptError, match="does not decrypt"):
        other_key.decrypt(sealed)
    anonymous = Payload(metadata={"encoding": b"binary/encrypted"}, data=sealed.data)
    with pytest.raises(codec.DecryptError, match="no encryption-key-id"):
        encryption.decrypt(anonymous)


def test_temporal_samples_format_both_ways() -> None:
    """Temporal's sample codec reads what this codec writes, and the reverse."""
    encryption = codec.EncryptionCodec(ring("b"))
    plain = json_payload('"hello"')
    assert sample_decode("b", KEY_B, encryption.encrypt(plain)) == plain
    assert encryption.decrypt(sample_encode("a", KEY_A, plain)) == plain


#: Written by the daemon's codec (src/codec/mod.rs) through its codec endpoint: key id
#: ``k1``, key bytes 0..32, the payload ``{"metadata": {"encoding": "json/plain"}, "data":
#: "\"hello\""}``. The reverse (Python's output decrypted by Rust) is src/codec/mod.rs's
#: ``a_payload_encrypted_by_python_decrypts``.
FROM_RUST = Payload(
    metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"k1"},
    data=bytes.fromhex(
        "e0d68c9e8393e23347ab0a3783048fef3834f4c2f43d54685cb5561e3e4d46359a27d20861750d79e3a88cb2662320c7e6e42d51720a5f86705f8ab113"
    ),
)


def test_a_payload_encrypted_by_the_daemon_decrypts() -> None:
    encryption = codec.EncryptionCodec(conf.KeyRing(keys={"k1": bytes(range(32))}, current="k1"))
    assert encryption.decrypt(FROM_RUST) == json_payload('"hello"')


def test_the_data_converter_encrypts_values_and_failure_messages() -> None:
    converter = codec.data_converter(ring())
    assert codec.data_converter(None) is codec.DataConverter.default

    async def round_trip() -> tuple[list[Any], list[Payload], Failure]:
        payloads = await converter.encode([{"context_json": '{"secret": "site-data"}'}])
        failure = Failure()
        await converter.encode_failure(ApplicationError("ValueError: secret site text"), failure)
        return await converter.decode(payloads), payloads, failure

    values, payloads, failure = asyncio.run(round_trip())
    assert values == [{"context_json": '{"secret": "site-data"}'}]
    assert all(p.metadata["encoding"] == b"binary/encrypted" for p in payloads)
    assert failure.message == "Encoded failure"
    assert b"secret site text" not in failure.SerializeToString()
    assert failure.encoded_attributes.metadata["encoding"] == b"binary/encrypted"
    decoded = asyncio.run(converter.decode_failure(failure))
    assert str(decoded) == "ValueError: secret site text"
