"""Model kind -> the protocol that serves it: one registry for exact kernels and compact models.

A served model advertises its ``kind`` in the public parameters; both the server and the client
look the kind up here and run the same :class:`ModelProtocol` object, so no other module branches
on the kind. To add a model kind: write its two-party steps (a module like
:mod:`protocols.krr.gaussian`), subclass :class:`ModelProtocol` (or reuse
:class:`ExactKernelProtocol` for a new kernel with a distance protocol), and :func:`register` it;
add the kind to :data:`protocols.krr.params.KINDS` so the public parameters accept it.

Phases of one session after the handshake (:mod:`protocols.krr.handshake`), each a method:
  a. public-model transfer (compact models only): :meth:`ModelProtocol.server_after_ready` /
     :meth:`ModelProtocol.client_public_model`;
  b. query featurisation from molecules: :meth:`ModelProtocol.molecule_features` (client);
  c. offline: OT set-up: :meth:`ModelProtocol.server_setup` / :meth:`ModelProtocol.client_setup`;
  d. online: :meth:`ModelProtocol.server_online` / :meth:`ModelProtocol.client_online`.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any

import numpy as np

from protocols.krr import gaussian, gaussian_malicious, laplacian, laplacian_malicious, laplacian_strict
from protocols.krr import linear as compact
from protocols.krr import linear_he
from protocols.krr.cache import PublicModelCache
from protocols.krr.handshake import client_ready
from protocols.krr.params import PublicParams
from protocols.mpc.party import Party
from protocols.mpc.randomness import derive_seed
from protocols.net.transport import Channel
from protocols.ot.ferret import setup_one_way, setup_pair
from secureml.errors import ProtocolError
from secureml.representations import representation_from_params

# OT extension of the exact protocols: SoftSpoken with k = 4 (32 bits per OT instead of IKNP's 128;
# a third less traffic for the Laplacian kernel's 23 million element COTs at N = 16,384)
EXACT_SOFTSPOKEN_K = 4


def _setup_exact_ot(party: Party, pp: PublicParams, kernel: str) -> None:
    """Both OT directions for an exact kernel: silent OT (protocols.ot.ferret) for the Laplacian
    kernel when ``pp.ot_engine`` says so (its tens of millions of element OTs at ~2.5 bits each
    instead of 32), SoftSpoken otherwise. Client-malicious (``pp.checked_ot``): the direction in
    which the client (role 1) chooses runs checked -- the silent engine's S1 on the checked
    SoftSpoken extension, set before its set-up; the other direction (the client as silent-OT
    sender) needs no check (protocols.ot.ferret, "A deviating sender"; laplacian_malicious).
    Client-malicious sessions keep the two-call TCCR hash on both directions (``tccr_hash``;
    semi-honest ones hash their one-block OT outputs with one AES call: protocols.ot.crypto).

    The bound chain (client-malicious, ``pp.laplacian_chain == "bound"``: protocols.krr.laplacian_strict)
    has the client choose in every OT it runs (commitments, random OTs, table OTs on them, the
    lattice proof's COTs), so on silent OT only that direction is set up (the public parameters
    decide it for both parties); the other is :class:`NoOTEngine`, which refuses any use rather than
    setting up an engine no one checked."""
    if kernel == "laplacian" and pp.ot_engine == "silent" and one_way(pp):
        # the server's checked sender, the client's checked receiver
        name = "silent-ot-sender" if party.role == 0 else "silent-ot-receiver"
        engine = setup_one_way(party.ch, party.role, seed=derive_seed(party.seed, name, party.role),
                               checked=pp.checked_ot)
        engine.tccr_hash = pp.checked_ot
        if party.role == 0:
            party.install_ot(sender=engine, receiver=NoOTEngine())
        else:
            party.install_ot(sender=NoOTEngine(), receiver=engine)
        return
    if kernel == "laplacian" and pp.ot_engine == "silent":
        seeds = (derive_seed(party.seed, "silent-ot-sender", party.role),
                 derive_seed(party.seed, "silent-ot-receiver", party.role))
        checked = (pp.checked_ot and party.role == 0, pp.checked_ot and party.role == 1)
        snd, rcv = setup_pair(party.ch, party.role, seeds=seeds, checked=checked)
        party.install_ot(sender=snd, receiver=rcv)
    else:
        party.setup_ot(softspoken_k=EXACT_SOFTSPOKEN_K)
    # both engines exist now (installed or set up above): the flag creates none
    party.ot_sender.tccr_hash = party.ot_receiver.tccr_hash = pp.checked_ot


def one_way(pp: PublicParams) -> bool:
    """Whether a Laplacian session runs OTs in one direction only (the client choosing): the bound
    chain's client-malicious protocol."""
    return getattr(pp, "security", None) == "client-malicious" and getattr(pp, "laplacian_chain", None) == "bound"


class NoOTEngine:
    """Stands for an OT direction a protocol never uses (set up for nobody): any use is a bug."""

    def __getattr__(self, name: str) -> Any:
        raise ProtocolError(f"this session has no OT engine in this direction (use of {name!r})")

    def __setattr__(self, name: str, value: Any) -> None:
        raise ProtocolError(f"this session has no OT engine in this direction (setting {name!r})")


class ModelProtocol(ABC):
    """One served model kind: the steps both parties run after the handshake.

    ``model`` arguments are :class:`protocols.krr.served.Served` objects (``ServedModel`` for exact
    kernels, ``CompactServedModel`` for compact models: the server's secret side); ``pp`` the
    :class:`PublicParams` both sides hold.
    """

    kind: str = ""

    # 0. between the hello's answer and the ready message (the client is computing its features)
    def server_party(self, ch: Channel, model: Any) -> Any:
        """The model owner's party for one session (role 0): by default a full :class:`Party`."""
        return Party(ch, role=0)

    def server_after_hello(self, model: Any, hello: dict[str, Any]) -> dict[str, Any]:
        """Model owner, once the public parameters are on their way: query-independent work the
        hello allows; what it returns joins ``info`` of the online phase. Nothing by default."""
        return {}

    # a. public-model transfer: nothing to send by default
    def server_after_ready(self, ch: Channel, model: Any, answer: dict[str, Any]) -> None:
        """Model owner, right after the client's ready message."""

    def client_public_model(self, ch: Channel, pp: PublicParams, cache: PublicModelCache) -> tuple[Any, bool]:
        """Query owner, before featurising: (public model or None, whether step 3's ready was sent)."""
        return None, False

    # b. featurisation
    @abstractmethod
    def molecule_features(self, pp: PublicParams, public_model: Any, dataset: Any) -> np.ndarray:
        """The model inputs for query molecules, from public information only."""

    # c. offline
    @abstractmethod
    def server_setup(self, party: Party, model: Any, k: int) -> dict[str, Any]:
        """Model owner, offline: OT set-up for ``k`` queries; returns what the online phase needs."""

    @abstractmethod
    def client_setup(self, party: Party, pp: PublicParams, k: int, peer: str, *, resume: bool = True
                     ) -> dict[str, Any]:
        """Query owner, offline: OT set-up with the server ``peer`` (resumable where supported)."""

    # d. online
    @abstractmethod
    def server_online(self, party: Party, model: Any, k: int, info: dict[str, Any]) -> None:
        """Model owner, online: its side of the ``k`` predictions (it learns nothing of them)."""

    @abstractmethod
    def client_online(self, party: Party, pp: PublicParams, Q: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Query owner, online: the predictions for the rows of ``Q``."""


class ExactKernelProtocol(ModelProtocol):
    """Exact KRR with a kernel of a distance: ``module.online(party, pp, k, model=, Q=)`` runs
    both roles (see :mod:`protocols.krr.gaussian`); ``malicious`` (if the kernel has one) is the
    client-malicious protocol's module (``server_online`` / ``client_online``), run when the
    public parameters say ``security = "client-malicious"``."""

    def __init__(self, kind: str, kernel: str, module: ModuleType, malicious: ModuleType | None = None,
                 variants: dict[str, ModuleType] | None = None) -> None:
        self.kind, self.kernel, self.module, self.malicious = kind, kernel, module, malicious
        # the Laplacian kernel's client-malicious protocols by pp.laplacian_chain (public: both run the same)
        self.variants = variants or {}

    def malicious_for(self, pp: PublicParams) -> ModuleType:
        """The client-malicious protocol module these public parameters name."""
        return self.variants.get(pp.laplacian_chain, self.malicious) if self.variants else self.malicious

    def molecule_features(self, pp: PublicParams, public_model: Any, dataset: Any) -> np.ndarray:
        return representation_from_params(pp.representation).transform(dataset)

    def server_setup(self, party: Party, model: Any, k: int) -> dict[str, Any]:
        _setup_exact_ot(party, model.public, self.kernel)
        # client-malicious: every extension piece the client (OT receiver) sends is checked
        party.ot_sender.checked = model.public.checked_ot
        return {}

    def client_setup(self, party: Party, pp: PublicParams, k: int, peer: str, *, resume: bool = True
                     ) -> dict[str, Any]:
        _setup_exact_ot(party, pp, self.kernel)
        party.ot_receiver.checked = pp.checked_ot  # the server verifies a proof per piece
        return {}

    def _strong(self, pp: PublicParams) -> bool:
        if pp.security != "client-malicious":
            return False
        if self.malicious is None:  # the handshake refuses such sessions first
            raise ProtocolError(f"{self.kind} has no client-malicious protocol")
        return True

    def server_online(self, party: Party, model: Any, k: int, info: dict[str, Any]) -> None:
        if self._strong(model.public):
            self.malicious_for(model.public).server_online(party, model.public, k, model.params)
            return
        self.module.online(party, model.public, k, model=model.params)

    def client_online(self, party: Party, pp: PublicParams, Q: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        if self._strong(pp):
            return self.malicious_for(pp).client_online(party, pp, Q)
        return self.module.online(party, pp, Q.shape[0], Q=Q)


class CompactLinearProtocol(ModelProtocol):
    """Compact random-feature models (:mod:`protocols.krr.linear`): public feature map, secret weights.

    Client-malicious (the default): one OT direction (server sends), SoftSpoken, resumable
    sessions, checked extension. Semi-honest with ``cross_term == "he"`` (and no output defense):
    the lattice inner product of :mod:`protocols.krr.linear_he`, one ciphertext each way. The public
    feature map is sent once per client and cached by its hash.
    """

    kind = "linear"

    def server_party(self, ch: Channel, model: Any) -> Any:
        # the lattice path has no OT: channel, role and lazily made randomness only
        return linear_he.LatticeParty(ch, role=0) if model.public.lattice_linear else Party(ch, role=0)

    def server_after_hello(self, model: Any, hello: dict[str, Any]) -> dict[str, Any]:
        if model.public.lattice_linear:  # a W + p1 u + e1 for the announced seed, during the client's features
            return linear_he.server_early(model, hello)
        return {}

    def server_after_ready(self, ch: Channel, model: Any, answer: dict[str, Any]) -> None:
        if answer.get("need_public_model"):
            # public, so it is no secret-bearing traffic
            ch.send(model.compact.public_blob)

    def client_public_model(self, ch: Channel, pp: PublicParams, cache: PublicModelCache) -> tuple[Any, bool]:
        sha = pp.public_model_sha256
        need = not cache.has(sha)
        if need:
            client_ready(ch, need_public_model=True)
            blob = ch.recv(max_bytes=max(pp.public_model_bytes, 1) + 64)
            if hashlib.sha256(blob).hexdigest() != sha:
                raise ProtocolError("public model does not match its advertised hash")
            cache.store(sha, blob)
        # kept loaded, like the plaintext model it stands for
        return cache.load(sha, compact.model_from_bytes), need

    def molecule_features(self, pp: PublicParams, public_model: Any, dataset: Any) -> np.ndarray:
        return compact.client_features(public_model, dataset)

    def server_setup(self, party: Party, model: Any, k: int) -> dict[str, Any]:
        if model.public.lattice_linear:  # semi-honest: one lattice ciphertext each way, no OT session
            return {"engine": "lattice"}
        # the extension moves offline when the model asks for it (precompute_ot)
        return compact.setup(party, model.public, k, out_bits=model.compact.out_bits,
                             softspoken_k=model.softspoken_k, precompute=model.precompute_ot,
                             keep_session=model.resume_ot, ot_pool=model.ot_pool,
                             ot_pool_pre=getattr(model, "ot_pool_precorrect", compact.OT_POOL_PRECORRECT))

    def client_setup(self, party: Party, pp: PublicParams, k: int, peer: str, *, resume: bool = True
                     ) -> dict[str, Any]:
        if pp.lattice_linear:
            return {"peer": peer, "resume": resume}
        return compact.setup(party, pp, k, server_key=peer, resume=resume)

    def server_online(self, party: Party, model: Any, k: int, info: dict[str, Any]) -> None:
        if model.public.lattice_linear:
            linear_he.server_online(party, model, k, keep_keys=model.resume_ot, early=info.get("lattice_early"))
            return
        ot = info.pop("_ot", None)
        compact.online(party, model.public, k, info["out_bits"], w=model.compact.weights,
                       y_offset=model.compact.offset, ot=ot)

        def after() -> None:
            # after the reply (run by serve_one once the session's cost is taken): the next
            # session's checked random OTs (protocols.ot.pool); a failed check raises here, before
            # the release, so the ticket (and its Delta) is dropped
            compact.after_reply(party, ot)
            info["release"]()  # the session succeeded: its OT-session state may serve the client again

        info["after_reply"] = after

    def client_online(self, party: Party, pp: PublicParams, Q: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        if pp.lattice_linear:
            preds, extra = linear_he.client_online(party, pp, Q, info.pop("peer"), resume=info.pop("resume"),
                                                   announced=info.pop("announced_seed", None),
                                                   encoded=info.pop("encoded", None))
            info.update(extra)
            return preds
        ot = info.pop("_ot", None)
        preds = compact.online(party, pp, Q.shape[0], info["out_bits"], phi=Q, ot=ot)
        # run by the caller once the prediction is in hand (protocols.krr.client.predict_features)
        info["after_reply"] = lambda: compact.after_reply(party, ot)
        info["ot_pool_used"] = bool(ot and ot.get("used"))
        return preds


#: kind -> protocol (filled by :func:`register`)
PROTOCOLS: dict[str, ModelProtocol] = {}
#: kernel of an exact KRR model -> the kind that serves it
KERNEL_KINDS: dict[str, str] = {}


def register(protocol: ModelProtocol) -> ModelProtocol:
    """Add a model kind (both parties must register the same kinds)."""
    PROTOCOLS[protocol.kind] = protocol
    if isinstance(protocol, ExactKernelProtocol):
        KERNEL_KINDS[protocol.kernel] = protocol.kind
    return protocol


def protocol_for(kind: str) -> ModelProtocol:
    try:
        return PROTOCOLS[kind]
    except KeyError:
        raise ProtocolError(f"unknown model kind {kind!r}; served here: {sorted(PROTOCOLS)}") from None


register(ExactKernelProtocol("krr-gaussian", "gaussian", gaussian, malicious=gaussian_malicious))
register(ExactKernelProtocol("krr-laplacian", "laplacian", laplacian, malicious=laplacian_strict,
                             variants={"bound": laplacian_strict, "unbound": laplacian_malicious}))
register(CompactLinearProtocol())
