"""`secureml serve --security`: client-malicious by default; a model kind or option without a
client-malicious protocol is refused at start-up with one line naming `--security semi-honest`,
and `auto` falls back to semi-honest only then (issue 12: client-malicious is the default)."""
from __future__ import annotations


import numpy as np
import pytest

from secureml.cli import build_parser
from secureml.commands.serve import (_load, set_compact_corrections, set_inner_product, set_laplacian_chain,
                                     set_ot_engine)
from secureml.errors import SecureMLError
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.models.random_features import RandomFourierRidge
from secureml.representations import CoulombMatrix
from secureml.data import embedded_split, load_embedded


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    data = load_embedded()
    train = data.subset(embedded_split(0)[0][:40])
    out = {}
    for kernel, sigma, grid in (("gaussian", 50.0, None), ("laplacian", 1000.0, 8)):
        m = MolecularModel(CoulombMatrix(size=23, grid_bits=grid), KernelRidge(kernel, sigma=sigma, lam=1e-6),
                           "U0_atomization").fit(train)
        out[kernel] = str(m.save(tmp / f"{kernel}.npz"))
    rff = MolecularModel(CoulombMatrix(size=23), RandomFourierRidge(n_features=64, sigma=50.0, seed=0),
                         "U0_atomization").fit(train)
    out["rff"] = str(rff.save(tmp / "rff.npz"))
    return out


def _args(path: str, *extra: str):
    return build_parser().parse_args(["serve", "--model", path, *extra])


def test_default_is_client_malicious(models):
    assert _args(models["gaussian"]).security == "client-malicious"
    for kind in ("gaussian", "laplacian", "rff"):
        assert _load(_args(models[kind]), None).public.security == "client-malicious"
    # both Gaussian cross terms have a client-malicious form (the lattice one with proven ciphertexts)
    for cross in ("he", "ot"):
        assert _load(_args(models["gaussian"], "--cross-term", cross), None).public.security == "client-malicious"


@pytest.mark.parametrize("kind,extra,reason", [
    ("laplacian", ("--round-to", "1"), "output rounding"),
    ("gaussian", ("--round-to", "1"), "output rounding"),
    # compact models too: the rounding chain takes the client's choices unchecked
    ("rff", ("--round-to", "1"), "output rounding"),
])
def test_refused_by_default_fall_back_with_auto(models, kind, extra, reason):
    with pytest.raises(SecureMLError, match=reason) as err:
        _load(_args(models[kind], *extra), None)
    assert "--security semi-honest" in str(err.value) and "\n" not in str(err.value)
    assert _load(_args(models[kind], *extra, "--security", "auto"), None).public.security == "semi-honest"
    assert _load(_args(models[kind], *extra, "--security", "semi-honest"), None).public.security == "semi-honest"


def test_noise_is_served_client_malicious(models):
    """--noise has a client-malicious form (the server's noise after the last check); --round-to not."""
    m = _load(_args(models["gaussian"], "--noise", "2"), None)
    assert m.public.security == "client-malicious"
    m.set_defense(None, 2.0)  # what run() does next: validate() accepts it
    assert m.public.output_defense["noise_std"] == 2.0
    with pytest.raises(SecureMLError, match="--round-to"):
        _load(_args(models["gaussian"], "--noise", "2", "--round-to", "1"), None)


def test_auto_cross_term_takes_the_cheaper_one(models, capsys):
    """--cross-term auto in client-malicious mode: this 40-point model is below the lattice cross
    term's byte floor, so 'ot'; a 2,048-point model of the same width gets 'he'; explicit choices
    are kept."""
    from protocols.krr import binding
    from secureml.commands.serve import _malicious_cross_term

    pp = _load(_args(models["gaussian"]), None).public
    est = binding.cross_term_bytes(pp)
    assert est["ot"] < est["he"] and _malicious_cross_term("auto", pp) == "ot"
    assert "cross term ot" in capsys.readouterr().out
    assert _malicious_cross_term("he", pp) == "he" and _malicious_cross_term("ot", pp) == "ot"
    pp.n_train = 2048
    est = binding.cross_term_bytes(pp)
    assert est["he"] < est["ot"] and _malicious_cross_term("auto", pp) == "he"


def test_lattice_cross_term_is_client_malicious(models):
    """Protocol 13: the Gaussian's lattice cross term has a client-malicious form (the client's key
    and ciphertexts proven well formed), so --cross-term he is no longer a reason to refuse."""
    m = _load(_args(models["gaussian"], "--cross-term", "he"), None)
    assert m.public.security == "client-malicious" and m.public.cross_term == "he"


def test_ot_engine_flag_sets_the_laplacian_engine(models):
    """--ot-engine in either security mode: the client-malicious Laplacian protocol runs on silent OT
    too since protocol 27 (checked where the client chooses; it was refused before)."""
    for security in ("semi-honest", "client-malicious"):
        for engine in ("softspoken", "silent"):
            args = _args(models["laplacian"], "--security", security, "--ot-engine", engine)
            model = _load(args, None)
            set_ot_engine(model, args.ot_engine)
            assert model.public.ot_engine == engine and model.public.security == security
    args = _args(models["laplacian"], "--security", "semi-honest")
    model = _load(args, None)
    before = model.public.ot_engine  # the size rule: 40 x 276 entries < 2^16 -> softspoken
    set_ot_engine(model, args.ot_engine)
    assert model.public.ot_engine == before == "softspoken"


def test_inner_product_flag_sets_the_public_route_of_semi_honest_exact_kernels(models):
    """serve --inner-product: 'he' / 'ot' fixed in the public parameters of a semi-honest exact model
    (the 40-point test model's 'auto' is the OT route: below the lattice's ~925-point break-even);
    a client-malicious model keeps its own protocol and ignores it."""
    assert _args(models["gaussian"]).inner_product == "auto"
    for kernel in ("gaussian", "laplacian"):
        for choice, lattice in (("he", True), ("ot", False), ("auto", False)):
            args = _args(models[kernel], "--security", "semi-honest", "--inner-product", choice)
            model = _load(args, None)
            set_inner_product(model, args.inner_product)
            assert model.public.inner_product == choice and model.public.lattice_sum is lattice
    args = _args(models["gaussian"], "--inner-product", "he")
    model = _load(args, None)
    set_inner_product(model, args.inner_product)
    assert model.public.security == "client-malicious" and model.public.inner_product == "auto"


def test_laplacian_chain_flag_defaults_to_the_bound_chain(models):
    """serve --laplacian-chain: the client-malicious Laplacian model runs the strict protocol (bound
    chain) unless "unbound" (the one-bit protocol) is asked for; other kinds ignore it."""
    assert _args(models["laplacian"]).laplacian_chain == "bound"
    for chain in ("bound", "unbound"):
        args = _args(models["laplacian"], "--laplacian-chain", chain)
        model = _load(args, None)
        set_laplacian_chain(model, args.laplacian_chain)
        assert model.public.laplacian_chain == chain and model.public.security == "client-malicious"
    model = _load(_args(models["laplacian"]), None)
    assert model.public.laplacian_chain == "bound"  # the default without the flag's setter too
    gauss = _load(_args(models["gaussian"], "--laplacian-chain", "unbound"), None)
    set_laplacian_chain(gauss, "unbound")
    assert gauss.public.kind == "krr-gaussian" and gauss.public.laplacian_chain != "unbound"


def test_max_aborts_flag_defaults_to_three():
    """serve --max-aborts: failed protocol checks a client may cause before it is refused (0: no limit)."""
    assert _args("m.npz").max_aborts == 3
    assert _args("m.npz", "--max-aborts", "0").max_aborts == 0


def test_compact_corrections_rounded(models):
    """--compact-corrections rounded: a client-malicious compact model announces its public L;
    exact (the default) announces none; other kinds and semi-honest compact models refuse it."""
    args = _args(models["rff"], "--compact-corrections", "rounded")
    assert args.compact_corrections == "rounded" and _args(models["rff"]).compact_corrections == "exact"
    model = _load(args, None)
    assert model.public.ot_round_bits == 0
    set_compact_corrections(model, args.compact_corrections)
    assert model.public.ot_round_bits > 0 and "ot_round_bits" in model.public.to_dict()
    set_compact_corrections(model, "exact")  # a no-op: the default keeps what the model has
    for path, extra in ((models["gaussian"], ()), (models["rff"], ("--security", "semi-honest"))):
        with pytest.raises(SecureMLError, match="compact-corrections") as err:
            set_compact_corrections(_load(_args(path, *extra), None), "rounded")
        assert "\n" not in str(err.value)


def test_compact_precorrect_flag(models):
    """--compact-precorrect is parsed (default off); only client-malicious compact models take it."""
    assert _args(models["rff"]).compact_precorrect is False
    assert _args(models["rff"], "--compact-precorrect").compact_precorrect is True
    model = _load(_args(models["rff"]), None)
    assert not model.ot_pool_precorrect
    set_compact_corrections(model, "exact", True)
    assert model.ot_pool_precorrect
    with pytest.raises(SecureMLError, match="compact-precorrect"):
        set_compact_corrections(_load(_args(models["gaussian"]), None), "exact", True)
