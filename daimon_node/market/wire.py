"""``/daimon/infer/1``: the typed messages of the inference market and their msgpack codec.

Each request and each reply is one frame of ``p2p.reqresp`` (several exchanges per
stream, in turn). A frame holds one msgpack array:

    ["quote", chain_id, payer_address]              -> ["ok", price, model_digest, paid, epoch]
    ["infer", chain_id, voucher, inputs_npy]         -> ["ok", model_digest, scores_npy, cumulative]
    a refused request                                -> ["err", code, message]

``price`` is per input item: a call of N inputs costs ``N * price`` (``call_cost``).
Amounts travel as decimal strings (they reach 2^128). The codec turns frames into the
dataclasses below and back; bytes that are not one of these shapes are
``MalformedMessage`` (a protocol penalty for the sender), so the service only ever sees
typed requests. The inputs stay an ``.npy`` blob here: whether they fit the problem is
the service's check (a refusal, ``bad_input``, not a protocol violation).
"""

from __future__ import annotations

from typing import Any, Final

import msgpack
from p2p.errors import MalformedMessage
from p2p.reqresp import ReqRespLimits

from chain.errors import DecodeError
from chain.payloads import Voucher

from daimon_node.market.messages import (
    Inference,
    InferReplyT,
    InferRequest,
    InferRequestT,
    Quote,
    QuoteRequest,
    Refusal,
)

INFER_PROTOCOL: Final[str] = "/daimon/infer/1"
INFER_LIMITS: Final[ReqRespLimits] = ReqRespLimits(
    max_request_bytes=16 * 1024 * 1024,  # inputs included
    max_response_bytes=64 * 1024 * 1024,
    request_timeout_s=60.0,
    idle_timeout_s=60.0,
    max_concurrent=4,
    max_streams_per_peer=4,
)
MAX_CODE_CHARS: Final[int] = 64
MAX_MESSAGE_CHARS: Final[int] = 1000
MAX_AMOUNT_DIGITS: Final[int] = 40  # 2^128 has 39


# --- field checks ------------------------------------------------------------------------------
def _bytes(value: Any, name: str, length: int | None = None, cap: int = 1 << 30) -> bytes:
    if not isinstance(value, bytes) or (length is not None and len(value) != length) or len(value) > cap:
        raise MalformedMessage(f"{name} must be bytes{f' of length {length}' if length else ''}")
    return value


def _amount(value: Any, name: str) -> int:
    if not isinstance(value, str) or not value.isdigit() or len(value) > MAX_AMOUNT_DIGITS:
        raise MalformedMessage(f"{name} must be a decimal string")
    return int(value)


def _text(value: Any, name: str, cap: int) -> str:
    if not isinstance(value, str):
        raise MalformedMessage(f"{name} must be text")
    return value[:cap]


def _unpack(data: bytes) -> list[Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise MalformedMessage(f"undecodable frame: {exc}") from None
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise MalformedMessage("a frame is [tag, ...]")
    return obj


def _pack(obj: list[Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# --- the codec -------------------------------------------------------------------------------
class InferCodec:
    """``p2p.reqresp.Codec`` of ``/daimon/infer/1``."""

    def encode_request(self, request: InferRequestT) -> bytes:
        if isinstance(request, QuoteRequest):
            return _pack(["quote", request.chain_id, request.payer])
        return _pack(["infer", request.chain_id, request.voucher.encode(), request.inputs_npy])

    def decode_request(self, data: bytes) -> InferRequestT:
        frame = _unpack(data)
        if frame[0] == "quote" and len(frame) == 3:
            return QuoteRequest(_bytes(frame[1], "chain_id", 32), _bytes(frame[2], "payer", 20))
        if frame[0] == "infer" and len(frame) == 4:
            try:
                voucher = Voucher.decode(_bytes(frame[2], "voucher", cap=4096))
            except DecodeError as exc:
                raise MalformedMessage(f"undecodable voucher: {exc}") from None
            return InferRequest(_bytes(frame[1], "chain_id", 32), voucher, _bytes(frame[3], "inputs"))
        raise MalformedMessage(f"unknown request {frame[0][:20]!r}/{len(frame)}")

    def encode_response(self, response: InferReplyT) -> bytes:
        if isinstance(response, Quote):
            return _pack(["ok", str(response.price), response.model_digest, str(response.paid), response.epoch])
        if isinstance(response, Inference):
            return _pack(["ok", response.model_digest, response.scores_npy, str(response.cumulative)])
        return _pack(["err", response.code, response.message])

    def decode_response(self, data: bytes) -> InferReplyT:
        frame = _unpack(data)
        if frame[0] == "err" and len(frame) == 3:
            return Refusal(_text(frame[1], "code", MAX_CODE_CHARS), _text(frame[2], "message", MAX_MESSAGE_CHARS))
        if frame[0] == "ok" and len(frame) == 5:
            epoch = frame[4]
            if type(epoch) is not int or epoch < 0:
                raise MalformedMessage("epoch must be a non-negative int")
            return Quote(_amount(frame[1], "price"), _bytes(frame[2], "model_digest", 32),
                         _amount(frame[3], "paid"), epoch)
        if frame[0] == "ok" and len(frame) == 4:
            return Inference(_bytes(frame[1], "model_digest", 32), _bytes(frame[2], "scores"),
                             _amount(frame[3], "cumulative"))
        raise MalformedMessage(f"unknown reply {frame[0][:20]!r}/{len(frame)}")
