"""Client-malicious exact Gaussian-kernel KRR prediction (``security = "client-malicious"``).

    prediction(q') = y_offset + sum_i alpha_i exp(-||x_i - q'||^2 / (2 sigma^2))

Threat model: the server (model owner) is semi-honest; the client may deviate arbitrarily (any
bytes, any order). Guarantee: per query the client learns at most F_det(q') + C + e_T for one q'
of the public input domain -- the server's deterministic fixed-point function F_det below, plus at most
N K' units of truncation carries, plus the server's fresh flooding term e_T of 2^40 N K' units
(step 13a), which hides the carries -- or an abort; the server
learns nothing about q'. Every OT the client chooses in is from the checked OT extension
(:mod:`protocols.ot.consistency`), so each choice bit is well defined; every later client value
is authenticated (:mod:`protocols.mpc.authenticated`) and checked (step 9) before the server
sends anything that depends on u; after that the client only receives; every table the client
indexes is indexed by digits of its *committed* u (:func:`~protocols.mpc.authenticated.bound_lut`),
never by a fresh or client-computed index. The client is never an OT sender.

The function F_det (fixed point, M = ring_bits, s = shift_bits, L = lo_bits, V = v_frac_bits,
w = weight_frac_bits, g = g_frac_bits, u = D + rho mod 2^M, x = u >> s split into x_lo (L bits)
and x_hi, rho likewise; the digits d_k = bits [a_k, b_k) of x_lo, k = 1..K, from :func:`tail_plan`):
    G_i   = round(2^g [H_i < 2^lut] exp(-c 2^L H_i + c rho_lo,i)),  H_i = (x_hi - rho_hi) mod 2^(W-L)
    g_k(d) = round(2^V exp(-c 2^(a_k) d))                          (public factor tables, <= 2^V)
    v_0,i = floor(alpha_enc,i G_i / 2^D0)                          (scale 2^(w+g); 2^(w+2g-D0) split)
    v_k,i = floor(v_(k-1),i g_k(d_k,i) / 2^t_k)                    (back to the scale 2^S)
    F_det = round(2^S y_offset) + sum_i v_K,i                      (mod 2^R)
with the output scale S = w + g + V - D (protocol 36, :func:`tail_plan`'s ``scale_bits``: D =
w + g + V - (T - 1 + OUTPUT_NOISE_BITS), the bits that the flood e_T of step 13a would set to noise
anyway, less 17 bits kept below it; 0 before protocol 36) -- with the split of step 10, whose
G_i = A_b(e0) B_b(e1) carries g more fractional bits, D0 = D (step 10b: ``head_shift``) and t_1 =
g; with one G table D0 = 0 and t_1 = D; t_k = V for k >= 2. Protocol
26 keeps the value at 2^S after every digit instead of the exact product of protocols 23-25 (scale
w + g + K V: R = 896 bits, 704 with the split), so the chain's ring is R = 216 bits at CM settings
(:func:`tail_plan`: R >= m + 41 + log2(N K) in whole bytes, m = 154 the bits of the widest product;
256 in protocol 26's whole 64-bit limbs). F_det
differs from the exact prediction by the roundings of G (of A and B) and of each g_k (relative
2^-(V+1) e^(c 2^a d) each: a kernel term within ~2^-35 relative) and by the K floors (each < 1
unit of 2^-S, and every later factor g_k / 2^V <= 1 only shrinks it: < K units per point), and
depends on the server's fresh rho only through them. The honest client's output is
F_det + C + e_T (+ e, step 14) with the carries C = sum_i C_i, C_i in [0, K'] (K' = the digits
with t_k > 0): the carry c_k,i in {0, 1} of step 11b enters v_k and, multiplied by the later
factors and floored, stays one unit at most (an integer D <= D' + c after each digit, since
floor(a + b) - floor(a) <= ceil(b) <= D' for b = D' g / 2^V <= D').

Protocol (both parties run :func:`online`; steps numbered in the code):
  1.-9. :mod:`protocols.krr.binding`: cross term over OT, mask-reveal, u committed bit by bit,
        bound to the committed query and its norm by the batched check; the server aborts on a
        failure before step 10. The random-OT keys of u's bits are kept. This is the client's
        LAST message: steps 10-14 go from the server to the client only (one flight).
  10. G table: one bound table OT indexed by x_hi (W - L <= 12 bits, the committed bits
      [s + L, M) of u); entry e = alpha_i G_i(e) + s0_i in Z_2^RG, RG = 8 g_bytes (protocol 29:
      the fewest whole bytes for the bound below, each word travels as its low g_bytes bytes;
      protocols 25-26 rounded up to 64-bit limbs), s0_i uniform on [2^l, 2^RG - 2^l) with
      |alpha_i G_i(e)| < 2^l for every e: h_i = alpha_i G_i + s0_i never wraps, so the client lifts
      h_i, and the server s0_i, into the chain's ring Z_2^R (R >= RG) as integers:
      p_0 - s_0 = alpha_i G_i exactly.
      Split (protocol 25, where :func:`tail_plan` finds it cheaper: the Gaussian at CM settings):
      x_hi = e1 2^h0 + e0 and G = sum_b A_b(e0) B_b(e1), rank 2 through the borrow
      b = [e0 < r0] of the subtraction x_hi - rho_hi (:func:`split_factors`; G_i then carries
      g more fractional bits, which the first digit truncates: t_1 = g; protocol 37: ga >= g, the
      fractional bits of A, below). Two bound tables, on e0
      and on e1, three words each:
        e0 table: A~_b = A_b(e0) + t_b (b = 0, 1),  c1 = A_0(e0) sg_0 + A_1(e0) sg_1 + r1
        e1 table: B~_b = alpha_i B_b(e1) + sg_b,     c2 = t_0 B~_0(e1) + t_1 B~_1(e1) + r2
      with r1 fresh and uniform in Z_2^RG, r2 = -(s0 + r1), and (protocol 29) the masks of the
      A~ and B~ words fresh on narrower ranges, so that those words are non-negative integers
      below 2^ta and 2^tb that travel in ta / 8 and tb / 8 bytes: t_b uniform on [0, 2^ta - 2^g)
      (0 <= A_b <= 2^g), sg_b uniform on [2^lb, 2^tb - 2^lb) (|alpha_i B_b| < 2^lb); the c words
      are ring elements of RG bits. The client computes h_i = A~_0 B~_0 + A~_1 B~_1 - c1 - c2
      (mod 2^RG) = alpha_i G_i + s0_i (the cross terms cancel: the products are ring products of
      the same integers on both sides). Per point 2^h0 (2 ta + RG) / 8 + 2^(hb - h0) (2 tb + RG) / 8
      bytes instead of 2^hb RG / 8: 2,480 B at CM settings, N = 16,384 (h0 = 4, ta = 96, tb = 136,
      RG = 168), against 3,456 B for protocols 25-26's three 192-bit words; the chain is the same
      as with one table (protocol 26).
      Protocol 36 (``alpha_e0``, where :func:`tail_plan` finds it cheaper): the weights ride on
      the e0 table instead -- A~_b = alpha_i A_b(e0) + t_b with t_b uniform on [2^la, 2^ta - 2^la)
      (|alpha_i A_b| <= 2^(w_bits - 1) 2^g < 2^la), B~_b = B_b(e1) + sg_b with sg_b uniform on
      [2^lb, 2^tb - 2^lb) (B_b <= g_max < 2^lb), c1 = X_0 sg_0 + X_1 sg_1 + r1 with X_b = alpha_i
      A_b, c2 = t_0 B~_0 + t_1 B~_1 + r2: the client's formula and h_i are unchanged. The wide
      words then sit on the short table (2^h0 entries) and the narrow ones on the long one: on
      bench.malicious_steps' model (N = 16,384, L = 41, h0 = 3) 16- and 13-byte words, 1,968 B per
      point, against 2,160 B with alpha on e1 at the same L. Each family of 2N words is within
      2N 2^la / (2^ta - 2^(la+1)) (resp. 2N g_max / (2^tb - 2^(lb+1))) of its masks alone, <= 2^-40
      by the same :func:`_lift` rule (2^-44.0 and 2^-40.4 there: la = 70, lb = 49).
      Protocol 37 (every split plan): (a) entry 0 of BOTH tables is free, as the chain's since
      protocol 29 (``bound_lut(first_free=True)``): its three words are the client's own entry-0
      pads pA_b, pc1 (e0 table) and pB_b, pc2 (e1 table), and the server derives its masks from
      them instead of drawing them (:func:`split_free_masks`, X_b / Y_b the e0 / e1 factors):
          t_b = pA_b - X_b(0),  sg_b = pB_b - Y_b(0),
          r1 = pc1 2^cut - (X_0(0) sg_0 + X_1(0) sg_1),  r2 = pc2 2^cut - (t_0 pB_0 + t_1 pB_1),
          s0 = -(r1 + r2)  (mod 2^RG),
      so that A~_b(0), B~_b(0), c1(0), c2(0) are the pads and the client's formula is unchanged;
      2^h0 - 1 and 2^h1 - 1 entries travel. Each A~ word is then pA + X_b(e0) - X_b(0): uniform
      mod 2^ta (exactly, no hiding term), and correct only if it does not leave [0, 2^ta) -- which
      happens for at most span(X_b) of the 2^ta pads (X_b(e) within an interval of length span:
      2^g for A_b, |alpha_i| 2^g for alpha_i A_b): 2N span / 2^ta <= 2^-40 for the 2N A words
      (:func:`_wrap_bytes`), likewise the B words (span g_max, or |alpha_i| g_max); and h must not
      wrap: s0 is uniform on a coset of 2^cut in Z_2^RG, so h' (below) leaves [0, 2^RG) with
      probability <= (a_max + 2^(cut+2)) / 2^RG per point, N times that <= 2^-40. These three are
      correctness events (the simulator ignores them), replacing the three hiding terms above.
      (b) The c words travel without their low cut = 8 floor((D0 - 1) / 8) bits (``g_cut``, below
      step 10b's truncation D0): the server sends floor(c / 2^cut) in RG - cut bits, the client
      takes c' = 2^cut floor(c / 2^cut), so its h' = alpha_i G_i + s0_i + delta_i with delta_i =
      (c1 mod 2^cut) + (c2 mod 2^cut) < 2^(cut+1), at its own digits, known to neither party alone
      (the server recorded both tables' low bits; the reference adds them at the client's digits).
      (c) h0 may exceed lut: A then carries the cut [H0 < 2^lut] and B_b [H1 = 0] (:func:`split_parts`).
      (d) A carries ga = g + x fractional bits, x the fewest with e^step / 2^x <= 2^SPLIT_GAIN_BITS
      (10): A's rounding comes back times B / 2^g <= e^step, an absolute 2^-(ga+1) e^step of a
      kernel term, at most 2^-(g+1) 2^10 (protocol 36's plans had gains 2^8.6-2^9.5 with ga = g);
      h then carries w + g + ga bits of scale, the first digit truncates t_1 = ga, and the bounds
      (a_max, RG, the A words' span 2^ga) grow by x bits. No split where ga > 52 (A_MAX_FRAC_BITS:
      A's float64 rounding).
      On bench.malicious_steps' model (N = 16,384): L = 42 (lut = 2, e^step = 2^17.3, ga = 48), hb =
      7, h0 = 4, alpha on e1, 13-byte A~, 18-byte B~ and 22-byte c words (RG = 192, cut = 16): 15
      (26 + 22) + 7 (36 + 22) = 1,126 B per point, against protocol 36's 1,968 B (L = 41, h0 = 3);
      the terms 2^-41.0 (A), 2^-42.7 (B), 2^-43.7 (h).
  10b. (protocol 36, the split only) Both parties truncate the lifted h by D0 = ``head_shift``
      bits: the client p_0 = floor(h_i / 2^D0), the server s_0 = floor(s0_i / 2^D0); h_i =
      alpha_i G_i + s0_i never wraps (step 10), so p_0 - s_0 = floor(alpha_i G_i / 2^D0) + c_0,i,
      c_0,i = [(alpha_i G_i mod 2^D0) + (s0_i mod 2^D0) >= 2^D0] in {0, 1}: one more carry per
      point, which the first digit's truncation by t_1 = g >= V (protocol 37: ga) keeps within one unit of 2^-S
      (c_0 g_1 / 2^g <= 1). With one G table (t_1 = 0 at the full scale, where a carry before
      the first digit would be worth 2^V units) the first digit truncates D bits instead. Why: the
      chain's products and hence m and R shrink by D bits (D = 20: m = 138, R = 200 on
      bench.malicious_steps' model at N = 16,384, L = 41, against m = 158, R = 224 at D = 0), and
      the output loses only bits that e_T floods.
      Protocol 37: with the c words' cut (step 10, (b)) p_0 - s_0 = floor(alpha_i G_i / 2^D0) + c_0,i,
      c_0,i = floor(((alpha_i G_i mod 2^D0) + (s0_i mod 2^D0) + delta_i) / 2^D0) in {0, 1, 2}
      (delta_i < 2^(cut+1) <= 2^D0): after the first digit at most 2 units of 2^-S (c_0 g_1 / 2^g
      <= 2), so K' counts 2 for step 10b (``head_carry``) and the chain's first bound is
      a_max / 2^D0 + 3.
  11. Masked, re-scaled public-factor chain (protocol 26), k = 1..K, in Z_2^R, R = 8 chain_bytes
      (protocol 29: whole bytes, 216 bits at CM settings): one bound table per point on the
      committed digit d_k with entry z_k(d) = s_(k-1),i g_k(d) - s'_k,i (mod 2^R). Protocol 29
      does not send entry 0: z_k(0) is the client's own entry-0 pad pad_0 (a hash of the random-OT
      keys of d_k's bits at 0, :func:`~protocols.mpc.authenticated.bound_lut`'s ``first_free``), which
      fixes the mask s'_k,i = s_(k-1),i g_k(0) - pad_0 (mod 2^R) -- uniform on Z_2^R, since pad_0 is
      a fresh random-OT output independent of s_(k-1) -- and the server sends the 2^m - 1 other
      entries: one R-bit word per 1-bit digit, so 1-bit digits are the cheapest (40 words for
      L = 40, against 80 for protocol 26's 2-bit digits with every entry sent). The client
      computes p'_k = p_(k-1) g_k(d_k) - z_k(d_k) (mod 2^R) = v_(k-1),i g_k(d_k) + s'_k,i -- an
      integer in (0, 2^R) unless s'_k falls outside [2^m, 2^R - 2^m) (|v_(k-1),i g_k(d)| < 2^m for
      every value the encoder allows: :func:`tail_plan`'s mask_bits), which has probability
      2^(m+1-R) per mask and N K 2^(m+1-R) <= 2^-40 in all (:func:`tail_plan`; 2^-42 at CM
      settings, N = 16,384). Protocol 37 counts it one-sided: s'_k is uniform on Z_2^R, so p'_k
      wraps for exactly |v g| of its values: N sum_k B_k 2^V / 2^R <= 2^-40 (B_k 2^V the bound of
      digit k's product; 2^-44.5 on bench.malicious_steps' model at R = 216, m = 158, where the
      old rule asked R = 224).
  11b. Local truncation by t_k bits: the client sets p_k = floor(p'_k / 2^t_k), the server
      s_k = floor(s'_k / 2^t_k) (its next z-table uses this truncated share). Then
      p_k - s_k = floor(v'_(k-1) g_k / 2^t_k) + c_k with the carry
      c_k = [(v'_(k-1) g_k mod 2^t_k) + (s'_k mod 2^t_k) >= 2^t_k] in {0, 1}: invariant
      p_k - s_k = v'_k (the chain with the carries), at the scale 2^S. The client commits nothing
      and nothing is checked.
  12. (the check of the earlier proved chain: nothing to check any more.)
  13. Output: the server sends y_S = round(2^S offset) - sum_i s_K,i + e_T (mod 2^R); the
      client's y = sum_i p_K,i + y_S = F_det(q') + C + e_T.
  13a. Flooding: e_T uniform in [-2^(T-1), 2^(T-1)), 2^T >= 2^40 N K' (T = 40 + log2(N K'):
      60 bits at CM settings, N = 16,384, K' = 42 carries per point: 41 one-bit digits and step
      10b's; protocol 34: K' = 40), fresh from the server's generator
      (:func:`flood_draw`). Why: the carries c_k,i depend on (v'_(k-1) g_k mod 2^t) against
      (s'_k mod 2^t) = a function of p'_k mod 2^t, which the client holds, so C is correlated
      with the client's view and with the weighted terms; C is in [0, N K'], so F_det + C + e_T is
      within statistical distance N K' / 2^T <= 2^-40 of F_det + e_T given the view: the simulator
      works from F_det + e_T alone. e_T also covers everything below 2^(T-1) units of 2^-S: the
      output is the prediction to 2^(T-1-S) = 2^-20 prediction units (protocol 36: S = T - 1 +
      OUTPUT_NOISE_BITS, 20; 2^-37 at S = 96 before), against the 1e-4 the tests ask. Step 10b's carry c_0 is a function
      of h mod 2^D0 (the client's) and s0 mod 2^D0 like the chain's carries of p'_k mod 2^t: it is
      one of the K' units the flood is sized for. The knapsack the exact product of protocols 23-25 offered
      (F - offset = sum_i a_i v_i with the client's known v_i, ~800 bits, and a_i = alpha_i G_i,
      ~74 bits: solved by a modular inverse for two points; ``test_flooding_hides_the_separate_
      terms``) is gone with the exact product; what is left is a sum of a_i times ~40-bit known
      factors known to 2^T units: protocol 25 already gave it only to one unit at this scale.
      The bits below 2^T enter y only through e_T's carry, a noisy bit per query (averaging M
      queries of one q' gives about log2(M) / 2 bits of them; a budget bounds M).
  14. Output noise (``--noise``, D1 of :mod:`protocols.krr.defense`): the server adds
      e = round(n 2^S), n ~ N(0, sd^2) fresh from its own generator, to y_S before it sends it;
      the honest client's y is F(q') + e.

Why a deviating client learns F(q') + e_T + e and nothing else (no check, no selective failure;
below, e stands for e_T + e, the server's two fresh additive terms):
  * Its inputs are fixed before step 10: u is committed and checked (steps 4-9), and every
    table of steps 10-11 is a bound table OT (:func:`~protocols.mpc.authenticated.bound_lut`)
    indexed by digits of that committed u. The client holds one random-OT key per committed bit,
    so it can open exactly the entry at its committed digit; any other entry is padded by keys it
    does not hold (a pseudorandom string: tested, ``test_another_digit_than_the_committed_one_
    opens_nothing``). It sends nothing in steps 10-14, so nothing it does there can change what
    the server sends, and the server never aborts there: no selective failure.
  * Protocol 37's free entries of the split tables (step 10 (a)): where the client's committed
    e0 is 0 it opens (A~_0, A~_1, c1) = its own pads pA_b, pc1 -- functions of its random-OT keys,
    independent of the model (tested: ``test_split_client_at_digit_0_opens_only_its_own_pads``);
    where e0 != 0 it lacks the key that these pads hash, so t_b = pA_b - X_b(0) and r1 are
    uniform and unknown to it: A~_b(e0) = pA_b + X_b(e0) - X_b(0) is uniform mod 2^ta and c1(e0)'s
    sent bits pc1 + (c1(e0) - c1(0)) / 2^cut uniform mod 2^(RG - cut), independent of everything
    else it holds. The e1 table likewise (sg_b and r2 from pB_b, pc2). In each of the four cases
    (e0 = 0 or not, e1 = 0 or not) its six words are its own pads or uniform words under pads it
    does not hold, so its h' = A~_0 B~_0 + A~_1 B~_1 - c1' - c2' is a function of words independent
    of the weights and of G: s0 = h' - alpha_i G_i - delta_i is the server's mask, uniform on a coset of
    2^cut, and the view is simulated by drawing those words (the correctness events of step 10
    aside). The unsent low bits delta_i enter only the carry c_0 (step 10b), one of the carries
    e_T floods. So the old distances of the A~, B~ words and of h_i (below) become 0, replaced by
    the wrap events of step 10 (2^-41.0, 2^-42.7, 2^-43.7 on bench.malicious_steps' model). Where
    the client knows a pad (its digit 0) the events are over that pad's hash, which it cannot
    choose (steering h' into the ~2^126-wide window of 2^192 that wraps takes ~2^66 hash
    evaluations, for one comparison bit of one alpha_i G_i), the same order as the chain's free
    entry since protocol 29 (p'_k in a 2^158-wide window of 2^216); at its own digit 0 its A~, B~
    words are its pads exactly and cannot wrap.
  * Its whole view of steps 10-14 -- h_i (with the split: A~_0, A~_1, c1, B~_0, B~_1, c2),
    z_1,i(d_1), ..., z_K,i(d_K) for every i, the ciphertexts of the entries it cannot open, and
    y_S -- is simulatable from F(q') + e alone. The unopened entries are padded by keys it does not
    hold: pseudorandom. With the split (protocol 29), A~_b = A_b + t_b is within statistical
    distance 2^g / (2^ta - 2^g) of t_b alone (uniform on [0, 2^ta - 2^g), fresh), B~_b = alpha_i B_b
    + sg_b within 2^lb / (2^tb - 2^(lb+1)) of sg_b alone (uniform on [2^lb, 2^tb - 2^lb), fresh):
    :func:`tail_plan` sizes ta and tb so that each family, 2N words, sums to <= 2^-40 (2^-41 and
    2^-47.7 at CM settings, N = 16,384; protocol 36's ``alpha_e0``: A~_b = alpha_i A_b + t_b within
    |alpha_i A_b| / (2^ta - 2^(la+1)) of t_b alone, B~_b = B_b + sg_b within B_b / (2^tb - 2^(lb+1))
    of sg_b alone, 2^-44.0 and 2^-40.4 summed on bench.malicious_steps' model); c1 is a shift of the fresh r1, uniform in Z_2^RG; and
    c2 = A~_0 B~_0 + A~_1 B~_1 - c1 - h_i (mod 2^RG) is a function of them and of h_i: the view
    reduces to h_i's, below. Given h_i (the client's p_0), z_k,i(d_k) and p'_k,i determine each
    other (z_k = p_(k-1) g_k - p'_k, p_(k-1) the client's own truncated value), so the view is
    (h_i, p'_1,i, ..., p'_K,i). Protocol 29's free entry 0: where d_k = 1 (any d_k != 0) the
    client lacks the key that pad_0 hashes, so s'_k = s_(k-1) g_k(0) - pad_0 is uniform on Z_2^R
    and independent of its view so far, and p'_k,i = v'_(k-1),i g_k + s'_k,i is uniform on Z_2^R
    (it never wraps unless s'_k is outside [2^m, 2^R - 2^m), probability 2^(m+1-R): the event the
    simulator ignores, N K 2^(m+1-R) <= 2^-40 in all, 2^-41.7 at CM settings); where d_k = 0 the
    client holds pad_0 = z_k(0), so p'_k = p_(k-1) g_k(0) - pad_0 is a function of what it
    already has (its previous value and its own random-OT keys) and tells it nothing new -- the
    server's mask s'_k stays unknown to it because s_(k-1) does. (Protocol 26 drew every s'_k
    fresh on [2^m, 2^R - 2^m) and sent entry 0: 2^m words per digit instead of 2^m - 1.) The
    carries are functions of p'_k mod 2^t and v' mod 2^t: they enter y alone, hidden by e_T (13a).
    h_i = alpha_i G_i + s0_i is within statistical distance |alpha_i G_i| / (2^RG - 2^(l+1)) of s0_i
    alone (uniform on [2^l, 2^RG - 2^l)); :func:`tail_plan` picks RG (whole bytes) so that the sum
    over the N points stays <= 2^-40 (l = 114 with the split at N = 16,384, 30-bit weights:
    2^-40.7 at RG = 168). Given those, y_S = F_det(q') + C + e - sum_i p_K,i is a function of
    F_det(q') + C + e and the view (the client's honest p_K computed from it), and C + e_T is
    within 2^-40 of e_T (13a). The simulator draws the view uniformly on the masks' ranges (and
    the d_k = 0 values from its own keys) and sets y_S = F_det(q') + e - sum_i p_K,i: the
    client's view, hence anything it computes from it, is within the sum of those distances --
    the lift's, the split words' (two families), the chain masks' range event and the carries',
    each <= 2^-40, at most 5 2^-40 < 2^-37.6 in all -- of a function of F_det(q') + e and its own
    coins.
  * What the client does locally therefore only moves its own output: an edit of h_i, z_k or
    p_k by a known err shifts y by exactly the difference between its edited chain's sum and its
    honest one's, both computed from its own view (within K + 1 units of err times the later public
    factors over 2^(the later truncations); tested bit-exactly); dropping points from its final
    sum leaves y masked by the dropped points' fresh s_K,i (neither the offset nor a weighted
    term).
Noise keeps the guarantee: e is fresh, drawn after the client's last message (step 9) and enters
only y_S, a single additive term of the client's output; the client never holds a value from
which it could be removed (every other message is masked by s0, s'_k, which e does not touch).
Fresh noise averages out over repeated queries: a budget (``serve --budget``) bounds that, as in
the semi-honest protocols. Rounding (``--round-to``) is not part of this protocol: it needs the
client's inputs to the rounding bound too (docs/malicious.md, "Output defenses"), so validate()
refuses it.

The split point (protocol 34; the Gaussian too since protocol 36): L above is the tail plan's own
``lo_bits`` -- pp.lo_bits (the semi-honest exponent split, c 2^L <= 4), or a wider low part where
the bytes are fewer (:func:`tail_plan`): each more bit of x_lo costs one chain digit (one R-bit word
per point) and halves the G table, while G's range e^step, step = c 2^L, widens h, the chain's
values and hence m and R by step / ln 2 bits (bounded so that 2^g e^step < 2^64: G's uint64
encoding). At CM settings, N = 16,384, the Laplacian's L = 22 (hb = 3, one table of 8 entries of
19 bytes, 22 digits in Z_2^240) sends 812 B per point against 1,297 B for the split at L = 19
(746 B at protocol 36's output scale: Z_2^216); the Gaussian of bench.malicious_steps (sigma 74,
pp.lo_bits = 40) takes L = 41 (split h0 = 3, alpha on e0, 1,968 B of G tables, 41 digits in
Z_2^200, 1,025 B: 2,993 B per point against protocol 34's 3,560 B at L = 40; protocol 37:
L = 42, h0 = 4, alpha on e1, ga = 48, 1,126 B of G tables with both entries 0 free, 42 digits in Z_2^216,
2,260 B per point). Nothing in the
arguments below depends on L: every table is still indexed by digits of the committed u, and the statistical terms (the lift's, the split words',
the masks' N K 2^(m+1-R), the flood's N K' / 2^T) are computed by the same formulas for the plan's
own a_max, m, K and K' (the Laplacian, K = K' = 22: T = 59; m = 173, the masks' sum 2^-47.5 at R = 240;
protocol 36: m = 152, 2^-44.5 at R = 216. The sigma-74 Gaussian at protocol 36, L = 41, K = 41,
K' = 42: the lift 2^-44.4 (RG = 176, l = 118), the split words 2^-44.0 and 2^-40.4 (alpha on e0:
16 and 13 bytes), the masks 2^-41.6 (m = 138, R = 200), the flood 2^-40.6 (T = 60); in all at most
5 terms of <= 2^-40, as before).

Protocol 37 on bench.malicious_steps' model (N = 16,384, sigma 74): L = 42, K = 42, K' = 44 (42
digits and step 10b's 2 units), T = 60: the terms 2^-41.0 (A words' wrap), 2^-42.7 (B words'),
2^-43.7 (h's lift), 2^-44.5 (chain masks, R = 216), 2^-40.5 (the flood): at most 5 terms of <= 2^-40.
Steps 10-11 send 1,126 + 1,134 = 2,260 B per point there (3,034 B in protocol 36).

Cost of steps 10-14 per training point (protocol 29): 2^(W-L) RG / 8 bytes (one G table), or with
the split 2^h0 (2 ta + RG) / 8 + 2^(W-L-h0) (2 tb + RG) / 8 bytes (2,480 B at CM settings, N =
16,384; 3,456 B in protocols 25-26), plus sum_k (2^(b_k - a_k) - 1) R / 8 bytes (the chain:
:func:`tail_plan` picks the digit width with the fewest bytes; the ring does not grow with the
digits (protocol 26) and entry 0 is free (protocol 29), so ~(L / m) (2^m - 1) words: 40 1-bit
digits in Z_2^216, 1,080 B at CM settings (protocol 36 on bench.malicious_steps' model: 1,968 B of
split tables with alpha on e0 and 41 digits in Z_2^200, 1,025 B), against 2,560 B for protocol 26's 20 2-bit digits in
Z_2^256, 9,328 B for protocol 25's 14 3-bit digits in Z_2^704 and 8,960 B for protocol 23's 20
2-bit digits in Z_2^896), and one output word. (The proved chain of protocols 8-22 committed v_(k+1) and t_k, 81 bits per digit,
and ran a batched check: ~16.5 kB per point at CM settings.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import binding, defense
from protocols.krr.chain import CLIENT, SERVER, digit_plan
from protocols.krr.defense_spec import OutputDefense
from protocols.krr.expsum import encode_weights
from protocols.krr.params import KERNEL_FRAC_BITS, MALICIOUS_MAX_HI_BITS, PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import he_matvec_checked
from protocols.mpc import limbs, u128
from protocols.mpc.context import PartyContext
from protocols.mpc.pages import prefer_small_pages
from secureml.errors import ModelError, ProtocolError

U64 = np.uint64
#: widest x_hi that the single G table OT serves (2^12 entries per training point)
MAX_HI_BITS = MALICIOUS_MAX_HI_BITS
#: digit widths the chain may use (step 11 picks the one with the fewest bytes for the model)
CHAIN_DIGIT_BITS = (1, 2, 3, 4, 5, 6)
#: |F| / 2^scale below 2^PREDICTION_BITS: the chain ring keeps one more bit for the sign
PREDICTION_BITS = 24
#: statistical distance of the lifted G-table outputs from uniform, summed over the points
LIFT_STAT_BITS = 40
#: the output's scale S' keeps this many bits below the flood (protocol 36): e_T < 2^(T-1) units of
#: 2^-S' is below 2^-OUTPUT_NOISE_BITS of a prediction unit (S' = T - 1 + OUTPUT_NOISE_BITS). 20:
#: at most 9.5e-7 of a unit per answer (17 would save 41 B per point on the Gaussian, ~0.67 MB at
#: N = 16,384, for answers that vary by up to 7.6e-6 between sessions)
OUTPUT_NOISE_BITS = 20


#: protocol 37: the rank-2 split's G = A B rounds A to 2^-ga, and A's rounding comes back times
#: B / 2^g <= e^step (step = c 2^L): an absolute error up to 2^-(ga+1) e^step of a kernel term where
#: one G table has 2^-(g+1). A gets ga = g + x fractional bits, the fewest with e^step / 2^x <=
#: 2^SPLIT_GAIN_BITS (ga <= A_MAX_FRAC_BITS: its float64 rounding stays below half a unit; the
#: split is not offered past it). 10 is the gain protocol 36's plans had on its models (e^step =
#: 2^8.6 and 2^9.5 at L = 41, ga = g); at L = 42 (2^17.3 and 2^18.9) with ga = g the answers moved
#: 1e-5 off the semi-honest ones, against the 2^-20 that
#: test_malicious_gaussian_honest_over_tcp_is_the_plaintext_prediction asks
SPLIT_GAIN_BITS = 10
A_MAX_FRAC_BITS = 52


#: the G table of step 10: "auto" (one table or the rank-2 split, whichever sends fewer bytes),
#: "single" or "split" (tests force one; both parties must use the same)
G_SPLIT = "auto"
#: which split table carries the weights alpha (protocol 36): "auto" (the fewer bytes), "e0" (the
#: first table's words are alpha A_b) or "e1" (protocols 25-34: alpha B_b); tests force one
ALPHA_SIDE = "auto"


@dataclass(frozen=True)
class TailPlan:
    """The public shape of steps 10-14, a function of the public parameters only.

    ``hb``: bits of x_hi; ``split``: 0 for one G table with 2^hb entries per point, else h0, the
    low bits of x_hi in the first table of the rank-2 split (2^h0 and 2^(hb - h0) entries of three
    words); ``digits``: bit ranges [a, b) of x_lo, one public factor table each; ``scale_bits``
    = the output's scale, the one-factor scale w + g + V that the chain keeps after every digit
    (protocol 26); ``one_factor_bits`` = w + g + V (the same); ``chain_bytes``: the chain's ring
    Z_2^R, R = 8 chain_bytes (protocol 29: any whole number of bytes; ``chain_limbs`` = ceil(R / 64)
    limbs hold it); ``g_bytes``: the ring Z_2^RG of step 10, RG = 8 g_bytes (``g_limbs`` limbs), the
    fewest bytes for the lift's statistical distance bound; ``lift_bits`` = l: |alpha_i G_i(e)|
    < 2^l, and the server's first mask is uniform on [2^l, 2^RG - 2^l); ``a_bytes``, ``b_bytes``,
    ``b_lift_bits`` (split only, protocol 29): the words A~_b = A_b + t_b and B~_b = alpha B_b + sg_b
    travel as integers of 8 a_bytes and 8 b_bytes bits (t_b uniform on [0, 2^(8 a_bytes) - 2^g),
    A_b <= 2^g; sg_b on [2^lb, 2^(8 b_bytes) - 2^lb), |alpha B_b| < 2^lb, lb = b_lift_bits);
    ``shifts``: the bits t_k the chain truncates after digit k (t_1 = scale of h + V - scale_bits:
    0 with one G table, g with the split; V after every later digit); ``mask_bits`` = m: every
    value the chain multiplies, |value_(k-1) g_k| < 2^m; its masks are uniform on Z_2^R (protocol
    29: fixed by the free entry 0 of each digit's table), outside [2^m, 2^R - 2^m) with probability
    2^(m+1-R) each; ``flood_bits`` = T: step 13a's e_T is uniform on [-2^(T-1), 2^(T-1)),
    2^T >= 2^40 N K' (K' = the truncating digits, each carrying at most one unit into the output);
    ``lo_bits`` = L: the split point of x = u >> s between the chain (x_lo, L bits) and the G table
    (x_hi, hb bits) -- pp.lo_bits, or for the Laplacian kernel (protocol 34) a wider low part where
    that sends fewer bytes (:func:`tail_plan`); ``lut_bits``: G_i(e) is 0 unless H < 2^lut_bits;
    ``step`` = c 2^L, the exponent per unit of x_hi; ``head_shift`` = D (protocol 36): both parties
    truncate the lifted h by D bits before the chain (step 10b), so that the chain and the output
    run at the scale ``scale_bits`` = w + g + V - D, D = w + g + V - (T - 1 + OUTPUT_NOISE_BITS)
    where that is positive: the bits below the flood's 2^(T-1) that keep e_T under
    2^-OUTPUT_NOISE_BITS of a prediction unit, and no finer; ``alpha_e0`` (split only, protocol
    36): the weights ride on the e0 table -- its words are alpha A_b + t_b with t_b on [2^la,
    2^(8 a_bytes) - 2^la), |alpha A_b| < 2^la (la = ``a_lift_bits``), the e1 table's B_b + sg_b
    with sg_b on [2^lb, 2^(8 b_bytes) - 2^lb), B_b < 2^lb -- where that sends fewer bytes (protocol
    37: those masks are fixed by entry 0's pads instead, and a_bytes / b_bytes sized by
    :func:`_wrap_bytes`); ``g_cut`` (split only, protocol 37): the low bits of the c words that do
    not travel (whole bytes, below head_shift); ``head_carry``: the most units step 10b's carry adds
    to the output (2 with the split since protocol 37, counted in ``carries``); ``a_frac_bits``
    (split only, protocol 37): ga, the fractional bits of A (0: g), so that h carries w + g + ga
    bits of scale and the first digit truncates t_1 = ga."""

    hb: int
    digits: tuple[tuple[int, int], ...]
    scale_bits: int
    one_factor_bits: int
    chain_limbs: int
    g_limbs: int
    lift_bits: int
    split: int = 0
    shifts: tuple[int, ...] = ()
    mask_bits: int = 0
    flood_bits: int = 0
    chain_bytes: int = 0
    g_bytes: int = 0
    a_bytes: int = 0
    b_bytes: int = 0
    b_lift_bits: int = 0
    lo_bits: int = 0
    lut_bits: int = 0
    step: float = 0.0
    head_shift: int = 0
    alpha_e0: bool = False
    a_lift_bits: int = 0
    g_cut: int = 0
    head_carry: int = 1
    a_frac_bits: int = 0

    @property
    def ring_bits(self) -> int:
        """R, the bits of the chain's ring (and of the output y)."""
        return 8 * self.chain_bytes

    @property
    def g_ring_bits(self) -> int:
        """RG, the bits of step 10's ring."""
        return 8 * self.g_bytes

    @property
    def carries(self) -> int:
        """K': units of carries per point -- one per digit with t_k > 0, each a carry in {0, 1},
        and step 10b's (D > 0), at most ``head_carry`` units (protocol 37: 2, its carry c_0 in
        {0, 1, 2} with the c words' low g_cut bits not sent)."""
        return sum(1 for t in self.shifts if t) + (self.head_carry if self.head_shift else 0)

    def chain_bytes_per_point(self) -> int:
        """Bytes of step 11 per training point: one bound table per digit, 2^m - 1 entries of R
        bits (entry 0 is free: the client's pad, protocol 29)."""
        return sum((1 << (b - a)) - 1 for a, b in self.digits) * self.chain_bytes

    def g_bytes_per_point(self) -> int:
        """Bytes of step 10 per training point."""
        if not self.split:
            return (1 << self.hb) * self.g_bytes
        # protocol 37: entry 0 of both tables is free (the client's own pads) and the c words
        # travel without their low g_cut bits
        c = self.g_bytes - self.g_cut // 8
        return (((1 << self.split) - 1) * (2 * self.a_bytes + c)
                + ((1 << (self.hb - self.split)) - 1) * (2 * self.b_bytes + c))


def _flood_bits(n_train: int, carries: int) -> int:
    """T of step 13a: 2^T >= 2^40 N K' (0 without carries)."""
    return LIFT_STAT_BITS + max(1, (n_train * carries - 1).bit_length()) if carries else 0


def _scale_drop(pp: PublicParams, digits: list[tuple[int, int]], head_carry: int = 1) -> int:
    """Protocol 36: the one-factor scale w + g + V less the output scale T - 1 + OUTPUT_NOISE_BITS,
    where positive. T counts K + head_carry units of carries per point: the K digits' and step
    10b's (the split: 2 units since protocol 37), or K digits that all truncate (one G table: its
    first digit truncates the drop; counted as K + 1)."""
    one = pp.weight_frac_bits + pp.g_frac_bits + pp.v_frac_bits
    drop = one - (_flood_bits(pp.n_train, len(digits) + head_carry) - 1 + OUTPUT_NOISE_BITS)
    return max(0, min(drop, pp.g_frac_bits))


def _chain_shape(pp: PublicParams, digits: list[tuple[int, int]], head_bits: int, a_max: int, min_bits: int,
                 drop: int = 0, head_carry: int = 1) -> tuple[tuple[int, ...], int, int, int, int]:
    """(shifts, mask bits m, flood bits T, bytes of R, head shift) of the re-scaled chain
    (protocol 26) for |h| <= a_max at scale 2^head_bits, at the output scale w + g + V - ``drop``
    (protocol 36). Where h carries at least that scale's g more bits (the split: the first digit
    truncates t_1 >= V bits), both parties truncate h by D = drop bits first (step 10b: |floor(h /
    2^D)| + carry <= a_max / 2^D + 2, and the first digit's truncation keeps that carry one unit
    of the output); with one G table (t_1 = 0 at the full scale) the first digit truncates D bits
    more instead (a carry before it would be worth g_1 / 2^t_1 = 2^V units). Each digit multiplies
    by g_k <= 2^V and truncates t_k bits so that the value is at the output scale; B bounds
    |value_k| (the carry adds one). The ring, in whole bytes (protocol 29): the masks' statistical
    distance, N K 2^(m+1) / (2^R - 2^(m+1)) <= 2^-40 in all, the lifted (and truncated) h (R >=
    min_bits, step 10's ring, less the head shift) and the output (scale + flood + prediction
    bits + sign).
    Protocol 37: step 10b's carry is at most ``head_carry`` (2 with the split's cut c words), so
    |floor(h / 2^D)| + carry <= a_max / 2^D + 1 + head_carry, and the masks' term is one-sided:
    mask k is uniform on Z_2^R (the free entry 0) and p'_k = v g + s'_k wraps for |v g| of its
    2^R values, so the ring needs N sum_k B_k 2^V <= 2^(R - 40) (B_k 2^V the bound of digit k's
    product; protocols 29-36 asked N K 2^(m+1) <= 2^(R-40) - 2^(m+1), one bit more)."""
    out_scale = pp.weight_frac_bits + pp.g_frac_bits + pp.v_frac_bits - drop
    V = pp.v_frac_bits
    head_shift = drop if head_bits >= out_scale + drop else 0
    shifts, m, scale = [], 0, head_bits - head_shift
    B = (a_max >> head_shift) + 1 + head_carry if head_shift else a_max
    wraps = 0  # sum_k of digit k's product bound: N times it, over 2^R, is the masks' wrap term
    for _ in digits:
        pre = B << V
        m = max(m, pre.bit_length())
        wraps += pre
        t = scale + V - out_scale
        shifts.append(t)
        B = (pre >> t) + 1
        scale = out_scale
    carries = sum(1 for t in shifts if t) + (head_carry if head_shift else 0)
    flood = _flood_bits(pp.n_train, carries)
    nb = -(-(min_bits - head_shift) // 8)
    while ((pp.n_train * wraps) << LIFT_STAT_BITS > 1 << (8 * nb)
           or 8 * nb < out_scale + flood + PREDICTION_BITS + 2):
        nb += 1
    return tuple(shifts), m, flood, nb, head_shift


def _chain_digits(pp: PublicParams, head_bits: int, a_max: int, min_bits: int, lo_bits: int, head_carry: int = 1
                  ) -> tuple[list[tuple[int, int]], tuple[int, ...], int, int, int, int]:
    """(digits, shifts, mask bits, flood bits, bytes of R, head shift, scale drop) with the fewest
    chain bytes, the drop from :func:`_scale_drop` (protocol 36). The
    re-scaled ring no longer grows with the digits (protocol 26), and entry 0 of each table is free
    (protocol 29), so the bytes are ~(L / m) (2^m - 1) R: 1-bit digits (40 entries for L = 40)
    against 60 for 2-bit ones; ties go to the wider digit."""
    best = None
    for m in CHAIN_DIGIT_BITS:
        digits = digit_plan(0, lo_bits, m)
        drop = _scale_drop(pp, digits, head_carry)
        shape = _chain_shape(pp, digits, head_bits, a_max, min_bits, drop, head_carry)
        cost = sum((1 << (b - a)) - 1 for a, b in digits) * shape[3]
        if best is None or cost <= best[0]:
            best = (cost, digits, *shape, drop)
    return best[1:]


def _lift(count: int, a_max: int) -> tuple[int, int]:
    """(l, bytes) for count values v with 0 <= |v| <= a_max, each masked by its own mask uniform on
    [2^l, 2^(8 bytes) - 2^l) (l = bits of a_max): the fewest bytes for which the statistical
    distance of the masked values from their masks alone, summed, count a_max / (2^(8 bytes) -
    2^(l+1)), is at most 2^-40. (Protocol 26 rounded this up to whole 64-bit limbs, at least two.)"""
    lift = a_max.bit_length()
    nb = 1
    while count * a_max << LIFT_STAT_BITS > (1 << (8 * nb)) - (1 << (lift + 1)):
        nb += 1
    return lift, nb


def _wrap_bytes(count: int, span: int) -> int:
    """Protocol 37: the fewest bytes nb such that count words x + pad, each with its pad uniform
    on [0, 2^(8 nb)) and x within an interval of length ``span`` that the pad fixes to its own
    value at one point (a free entry 0: x(0) + mask = pad), leave [0, 2^(8 nb)) with probability
    at most count span / 2^(8 nb) <= 2^-40 in all (the words are uniform mod 2^(8 nb): no
    hiding term, only this correctness event)."""
    nb = 1
    while (count * span) << LIFT_STAT_BITS > 1 << (8 * nb):
        nb += 1
    return nb


def tail_plan(pp: PublicParams) -> TailPlan:
    """The public plan of steps 10-14 (:class:`TailPlan`); ProtocolError if x_hi is too wide.
    One G table, or its rank-2 split where that sends fewer bytes in all (``G_SPLIT``); for the
    Laplacian kernel (protocol 34) also over the split points L >= pp.lo_bits whose G table still
    fits 64-bit words (2^g e^(c 2^L) < 2^63.9): the fewest bytes in all. (The Gaussian keeps
    L = pp.lo_bits, its messages unchanged: its tests build their expectations from pp.lo_bits;
    docs/malicious.md, "Protocol 34", has what a wider L would save there.)"""
    hb0 = _high_bits(pp)
    options = []
    for L in range(pp.lo_bits, pp.d_bits):
        if L > pp.lo_bits and pp.g_frac_bits + pp.c * (1 << L) / math.log(2) >= 63.9:
            break
        options += _plans_at(pp, L, pp.d_bits - L if L > pp.lo_bits else hb0)
    if G_SPLIT == "single":
        options = [t for t in options if not t.split]
    elif G_SPLIT == "split":
        options = [t for t in options if t.split]
        if not options:
            raise ProtocolError("the G table's high part has too few bits to split")
    return min(options, key=lambda t: (t.g_bytes_per_point() + t.chain_bytes_per_point(), t.split, t.lo_bits,
                                       t.alpha_e0))


def _lut_bits(pp: PublicParams, L: int) -> int:
    """Bits of x_hi that the G table's non-zero entries span at the split point L: covers the
    exponent up to T_CUT, as pp.lut_bits does at L = pp.lo_bits."""
    if L == pp.lo_bits:
        return pp.lut_bits
    t_cut = (KERNEL_FRAC_BITS + 4) * math.log(2)
    return int(min(math.ceil(math.log2(t_cut / (pp.c * (1 << L)) + 1)), pp.d_bits - L))


def _plans_at(pp: PublicParams, L: int, hb: int) -> list[TailPlan]:
    """The one-table plan and the rank-2 splits at the split point L (hb = bits of x_hi)."""
    step, lut = pp.c * (1 << L), _lut_bits(pp, L)
    # |alpha_i| <= 2^(weight_bits - 1); G_i(e) = rint(2^g e^{-c 2^L H + c rho_lo}) <= rint(2^g e^step)
    g_max = math.ceil(math.exp(step) * 2.0 ** pp.g_frac_bits * (1 + 2 ** -40)) + 1
    w_max = 1 << (pp.weight_bits - 1)
    lift, g_bytes = _lift(pp.n_train, w_max * g_max)
    # the chain keeps the one-factor scale 2^(w + g + V) after every digit (protocol 26): with the
    # split, whose G carries g more bits, the first digit truncates g + V bits' worth down to it
    one = pp.weight_frac_bits + pp.g_frac_bits + pp.v_frac_bits
    head = pp.weight_frac_bits + pp.g_frac_bits
    digits, shifts, m, flood, cb, hs, drop = _chain_digits(pp, head, w_max * g_max, 8 * g_bytes, L)
    options = [TailPlan(hb, tuple(digits), one - drop, one, -(-cb // 8), -(-g_bytes // 8), lift, 0, shifts, m, flood,
                        cb, g_bytes, lo_bits=L, lut_bits=lut, step=step, head_shift=hs)]
    # rank 2: A(e0) <= 2^ga (e^{-c 2^L H0}, H0 >= 0) times B(e1) <= g_max, ga more bits of scale
    # (protocol 37: ga = g + x, x the fewest bits with e^step / 2^x <= 2^SPLIT_GAIN_BITS)
    ga = pp.g_frac_bits + max(0, math.ceil(step / math.log(2) - SPLIT_GAIN_BITS))
    a2 = w_max * ((1 << ga) + 1) * g_max
    lift2 = a2.bit_length()
    # protocol 37: s0 = -(r1 + r2) is fixed by the free entries' pads, uniform on a coset of 2^cut
    # (cut < g): h' = alpha G + delta + s0 (delta < 2^(cut+1), the c words' unsent low bits) leaves
    # [0, 2^RG) with probability <= (a2 + 2^(cut+2)) / 2^RG per point
    g2 = _wrap_bytes(pp.n_train, a2 + (1 << (ga + 2)))
    digits2, shifts2, m2, flood2, cb2, hs2, drop2 = _chain_digits(pp, head + ga, a2, 8 * g2, L, head_carry=2)
    # protocol 37: the c words' low bits below step 10b's truncation, in whole bytes, stay home (cut < D)
    cut = 8 * ((hs2 - 1) // 8) if hs2 > 8 else 0
    # the words A~_b and B~_b (two of each per point), protocol 37: masks fixed by entry 0's pads, so
    # each word is uniform mod 2^(8 bytes); it must not wrap: X_b(e) within an interval of length
    # span (A_b in [0, 2^ga], alpha A_b of length <= w_max 2^ga, B_b in [0, g_max], alpha B_b w_max g_max)
    a_bytes, b_bytes = _wrap_bytes(2 * pp.n_train, 1 << ga), _wrap_bytes(2 * pp.n_train, w_max * g_max)
    # protocol 36: alpha on the e0 side instead -- alpha A_b and B_b
    a_bytes_w, b_bytes_w = _wrap_bytes(2 * pp.n_train, w_max << ga), _wrap_bytes(2 * pp.n_train, g_max)
    la, lb, lbw = (w_max << ga).bit_length(), (w_max * g_max).bit_length(), g_max.bit_length()
    sides = {"e1": [(False, a_bytes, b_bytes, 0, lb)], "e0": [(True, a_bytes_w, b_bytes_w, la, lbw)]}
    sides["auto"] = sides["e1"] + sides["e0"]
    # protocol 37: h0 up to hb - 1, past lut too (A then carries the cut [H0 < 2^lut], B [H1 = 0]);
    # the split only where A's fractional bits keep its rounding gain at most 2^SPLIT_GAIN_BITS
    for h0 in range(1, hb if ga <= A_MAX_FRAC_BITS else 1):
        for a_e0, ab, bb, la_, lb_ in sides[ALPHA_SIDE]:
            options.append(TailPlan(hb, tuple(digits2), one - drop2, one, -(-cb2 // 8), -(-max(g2, ab, bb) // 8),
                                    lift2, h0, shifts2, m2, flood2, cb2, g2, ab, bb, lb_, lo_bits=L, lut_bits=lut,
                                    step=step, head_shift=hs2, alpha_e0=a_e0, a_lift_bits=la_, g_cut=cut,
                                    head_carry=2, a_frac_bits=ga))
    return options


def _high_bits(pp: PublicParams) -> int:
    """Bits of x_hi; ProtocolError if the model does not fit the tail."""
    hb = pp.d_bits - pp.lo_bits
    if pp.lo_bits < 1:
        raise ProtocolError("the client-malicious kernel protocol needs a low part of the distance (sigma too small "
                            "for the feature bounds): serve it with --security semi-honest")
    if not 1 <= hb <= MAX_HI_BITS:
        raise ProtocolError(f"the client-malicious kernel protocol needs the distance's high part to have 1..{MAX_HI_BITS} "
                            f"bits, this model's has {hb}: serve it with --security semi-honest")
    return hb


def plan(pp: PublicParams) -> tuple[int, list[tuple[int, int]]]:
    """(bits of x_hi, digits of x_lo) from public numbers; ProtocolError if x_hi is too wide."""
    tp = tail_plan(pp)
    return tp.hb, list(tp.digits)


def digit_factors(pp: PublicParams, a: int, b: int) -> np.ndarray:
    """g_k(d) = round(2^V exp(-c 2^a d)) for d in [0, 2^(b-a)): the public factor table of a digit."""
    d = np.arange(1 << (b - a), dtype=np.float64)
    return np.rint(np.exp(-pp.c * float(1 << a) * d) * float(1 << pp.v_frac_bits)).astype(U64)


def _digit(x: np.ndarray, a: int, b: int) -> np.ndarray:
    return ((x >> U64(a)) & U64((1 << (b - a)) - 1)).astype(np.intp)


def client_factor(pp: PublicParams, x_lo: np.ndarray) -> list[int]:
    """The public function v(x_lo) = prod_k g_k(d_k) per point, exact (Python ints, scale 2^(K V))."""
    out = [1] * len(x_lo)
    for a, b in tail_plan(pp).digits:
        g = digit_factors(pp, a, b)[_digit(np.asarray(x_lo, dtype=U64), a, b)]
        out = [o * int(v) for o, v in zip(out, g)]
    return out


# ---- client-local steps (module functions: tests replace one of them) ---------------------------
def client_chain_step(p: np.ndarray, g: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Step 11, client: p_k = p_(k-1) g_k(d_k) - z_k (mod 2^R; limb arrays (N, n), g (N,))."""
    return limbs.sub(limbs.mul_small(p, g), z)


def client_truncate(p: np.ndarray, t: int) -> np.ndarray:
    """Step 11b, client: p_k <- floor(p_k / 2^t_k), p_k read as an integer in [0, 2^R) (it never
    wraps: p_k = value_k + s_k with s_k on [2^m, 2^R - 2^m) and |value_k| < 2^m)."""
    return limbs.shr(p, t) if t else p


def client_output(p: np.ndarray, y_s: int, ring_bits: int) -> int:
    """Step 13, client: y = sum_i p_K,i + y_S (mod 2^R)."""
    return (limbs.total(p) + y_s) % (1 << ring_bits)


def online(party: PartyContext, pp: PublicParams, *, model: KernelModelParams | None = None,
           X: np.ndarray | None = None, xx: np.ndarray | None = None, q: np.ndarray | None = None,
           lam: int = au.STAT_BITS) -> dict | int:
    """One query, both roles. Server: ``model`` with its encoded ``X``, ``xx``; returns a record
    of its randomness (rho, the first mask, the noise) for tests. Client: its encoded ``q``;
    returns y (mod 2^R, scale 2^scale_bits of :func:`tail_plan`)."""
    _refuse_rounding(pp)
    plan(pp)
    # both parties: no huge-page faults on the session's large arrays (protocols.mpc.pages: the kernel's
    # compaction on them cost one of two measured sessions at N = 16,384 ~1.3 s of system time, stop 10)
    prefer_small_pages()
    # 1.-9. bind u = D(q') + rho to the committed query
    if party.role == SERVER:
        alpha, need = encode_weights(model.dual_coef, pp.weight_frac_bits)
        if need > pp.weight_bits:
            raise ModelError("weights wider than the advertised weight_bits")
        prepared = (he_matvec_checked.prepare(X, pp.x_bits, pp.ring_bits, owner=model)
                    if pp.cross_term == "he" else None)
        try:
            b = binding.bound_masked_distances(party, pp, X=X, xx=xx, lam=lam, keep_pads=True, prepared=prepared,
                                               x_float=binding.rows_as_float(X, owner=model))
            return kernel_output(party, pp, rho=b.rho, delta=b.delta, u_pads=b.u_pads, model=model, lam=lam)
        finally:
            # the next session's reply pad (stop 11), after this one's last message: off its critical
            # path (a no-op unless prepare_server asked for pads); also after an abort -- a pad whose
            # seed was sent is never used again
            he_matvec_checked.refill_pads(prepared)
    b = binding.bound_masked_distances(party, pp, q=q, lam=lam, keep_pads=True)
    return kernel_output(party, pp, u=b.u, u_pads=b.u_pads, lam=lam)


def _refuse_rounding(pp: PublicParams) -> None:
    if OutputDefense.from_dict(pp.output_defense).round_bits is not None:
        # validate() refuses it too: rounding has no bound protocol here
        raise ProtocolError("rounding (--round-to) is not part of the client-malicious protocols")


def g_terms(pp: PublicParams, rho_x: np.ndarray, alpha: np.ndarray, tp: TailPlan) -> tuple[np.ndarray, np.ndarray]:
    """Server, step 10: the non-zero part of the G table. G_i(e) is 0 unless H = (e - rho_hi) mod
    2^hb < 2^lut, so only 2^lut of the 2^hb entries per point need a product: returns the columns
    e (N, 2^lut) and alpha_i G_i(e) there as exact two's-complement limb arrays (N, 2^lut,
    g_limbs); rho_x = rho >> s. (The whole table costs 2^(hb - lut) times more: 32x at CM settings.)"""
    L, hb = tp.lo_bits, tp.hb
    x_lo = rho_x & U64((1 << L) - 1)
    rho_hi = (rho_x >> U64(L)).astype(np.int64)
    H = np.arange(1 << tp.lut_bits, dtype=np.int64)[None, :]
    cols = (rho_hi[:, None] + H) % (1 << hb)
    G = np.exp(-pp.c * float(1 << L) * H + pp.c * x_lo.astype(np.float64)[:, None])
    G_enc = np.rint(G * float(1 << pp.g_frac_bits)).astype(U64)
    aG = limbs.from_u128(u128.mul64(G_enc, np.abs(alpha).astype(U64)[:, None]), tp.g_limbs)
    return cols, np.where((alpha < 0)[:, None, None], limbs.neg(aG), aG)


def g_table(pp: PublicParams, rho_x: np.ndarray, alpha: np.ndarray, tp: TailPlan) -> np.ndarray:
    """alpha_i G_i(e) for every e (N, 2^hb, g_limbs): :func:`g_terms` scattered into zeros."""
    cols, aG = g_terms(pp, rho_x, alpha, tp)
    out = limbs.zeros((len(rho_x), 1 << tp.hb), tp.g_limbs)
    out[np.arange(len(rho_x))[:, None], cols] = aG
    return out


def split_factors(pp: PublicParams, rho_x: np.ndarray, alpha: np.ndarray, tp: TailPlan
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Server, step 10 with the rank-2 split (h0 = tp.split low bits e0 of x_hi, h1 = hb - h0 high
    bits e1; rho_hi = r1 2^h0 + r0). With the borrow b = [e0 < r0],
        H = (e - rho_hi) mod 2^hb = H1 2^h0 + H0,  H0 = e0 - r0 + 2^h0 b,  H1 = (e1 - r1 - b) mod 2^h1,
    and [H < 2^lut] = [H1 < 2^(lut - h0)] (h0 <= lut), so G = A(e0) B_b(e1) with
        A(e0)   = round(2^g e^{-c 2^L H0})                                   (<= 2^g)
        B_b(e1) = round(2^g [H1 < 2^(lut - h0)] e^{-c 2^(L + h0) H1 + c rho_lo})
    -- rank 2 in (e0, e1): alpha G = sum_b A_b(e0) alpha B_b(e1), A_b = [b(e0) = b] A. Returns
    ([A_0, A_1] as uint64 (N, 2^h0), [alpha B_0, alpha B_1] as signed limb arrays (N, 2^h1, g_limbs))."""
    As, Bs = split_parts(pp, rho_x, tp)
    a = signed_limbs(alpha, tp.g_limbs)[:, None, :]
    return As, [limbs.mul_small(a, B) for B in Bs]


def signed_limbs(alpha: np.ndarray, n: int) -> np.ndarray:
    """int64 values as two's-complement limb arrays (..., n) mod 2^(64 n)."""
    alpha = np.asarray(alpha, dtype=np.int64)
    mag = limbs.zeros(alpha.shape, n)
    mag[..., 0] = np.abs(alpha).astype(U64)
    return np.where((alpha < 0)[..., None], limbs.neg(mag), mag)


def split_parts(pp: PublicParams, rho_x: np.ndarray, tp: TailPlan) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`split_factors` before the weights: ([A_0, A_1] (N, 2^h0), [B_0, B_1] (N, 2^h1)), uint64
    (each < 2^64: A <= 2^g, B <= 2^g e^step)."""
    L, h0 = tp.lo_bits, tp.split
    h1 = tp.hb - h0
    x_lo = rho_x & U64((1 << L) - 1)
    rho_hi = (rho_x >> U64(L)).astype(np.int64)
    r0, r1 = rho_hi & ((1 << h0) - 1), rho_hi >> h0
    e0 = np.arange(1 << h0, dtype=np.int64)[None, :]
    borrow = (e0 < r0[:, None]).astype(np.int64)
    H0 = e0 - r0[:, None] + (borrow << h0)
    A = np.exp(-pp.c * float(1 << L) * H0)
    if h0 > tp.lut_bits:  # protocol 37: the cut [H < 2^lut] = [H1 = 0] [H0 < 2^lut]
        A = np.where(H0 < (1 << tp.lut_bits), A, 0.0)
    A = np.rint(A * float(1 << (tp.a_frac_bits or pp.g_frac_bits))).astype(U64)  # protocol 37: ga bits
    As = [np.where(borrow == b, A, U64(0)) for b in (0, 1)]
    e1 = np.arange(1 << h1, dtype=np.int64)[None, :]
    Bs = []
    for b in (0, 1):
        H1 = (e1 - r1[:, None] - b) % (1 << h1)
        B = np.exp(-pp.c * float(1 << (L + h0)) * H1 + pp.c * x_lo.astype(np.float64)[:, None])
        B = np.where(H1 < (1 << max(tp.lut_bits - h0, 0)), B, 0.0)
        Bs.append(np.rint(B * float(1 << pp.g_frac_bits)).astype(U64))
    return As, Bs


def split_tables(As: list[np.ndarray], Bs: list[np.ndarray], tm: list[np.ndarray], sg: list[np.ndarray],
                 r1: np.ndarray, r2: np.ndarray, a: np.ndarray, rows: int = 512, alpha_e0: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Step 10 (split), server: the two bound tables from the factors (:func:`split_parts`), the
    masks t_b = ``tm`` and sg_b = ``sg``, r1, r2 and the weights ``a`` (limb arrays (N, 1, nG)):
    e0 = [A_0 + t_0, A_1 + t_1, c1] (N, 2^h0, 3 nG), c1 = sg_0 A_0 + sg_1 A_1 + r1, and
    e1 = [alpha B_0 + sg_0, alpha B_1 + sg_1, c2] (N, 2^h1, 3 nG), c2 = t_0 B~_0 + t_1 B~_1 + r2 with
    t_b B~_b = (t_b alpha) B_b + t_b sg_b: the per-point products once, then one word-by-u64 product
    per entry (the same values as the direct ring products of B~, at a fraction of their CPU).
    Computed ``rows`` points at a time (pure arithmetic: the same tables; the work arrays stay in
    the cache). ``alpha_e0`` (protocol 36): the weights on the e0 side, X_b = alpha A_b and Y_b = B_b:
    e0 = [X_0 + t_0, X_1 + t_1, c1], c1 = sg_0 X_0 + sg_1 X_1 + r1, and e1 = [B_0 + sg_0, B_1 + sg_1,
    c2], c2 = t_0 B_0 + t_1 B_1 + (t_0 sg_0 + t_1 sg_1 + r2): the client's formula is the same."""
    N, nG = As[0].shape[0], a.shape[-1]
    e0 = np.empty((N, As[0].shape[1], 3 * nG), dtype=U64)
    e1 = np.empty((N, Bs[0].shape[1], 3 * nG), dtype=U64)
    for i0 in range(0, N, rows):
        r = slice(i0, i0 + rows)
        A, B, t, s, ar = [x[r] for x in As], [x[r] for x in Bs], [x[r] for x in tm], [x[r] for x in sg], a[r]
        if alpha_e0:
            X = [limbs.mul_small(ar, A[b]) for b in (0, 1)]
            c1 = limbs.add(limbs.add(limbs.mul(s[0], X[0]), limbs.mul(s[1], X[1])), r1[r])
            e0[r] = np.concatenate([limbs.add(X[0], t[0]), limbs.add(X[1], t[1]), c1], axis=-1)
            Bl = [np.concatenate([x[..., None], limbs.zeros(x.shape, nG - 1)], axis=-1) for x in B]
            const = limbs.add(limbs.add(limbs.mul(t[0], s[0]), limbs.mul(t[1], s[1])), r2[r])
            c2 = limbs.add(limbs.add(limbs.mul_small(t[0], B[0]), limbs.mul_small(t[1], B[1])), const)
            e1[r] = np.concatenate([limbs.add(Bl[0], s[0]), limbs.add(Bl[1], s[1]), c2], axis=-1)
            continue
        Al = [np.concatenate([x[..., None], limbs.zeros(x.shape, nG - 1)], axis=-1) for x in A]
        c1 = limbs.add(limbs.add(limbs.mul_small(s[0], A[0]), limbs.mul_small(s[1], A[1])), r1[r])
        e0[r] = np.concatenate([limbs.add(Al[0], t[0]), limbs.add(Al[1], t[1]), c1], axis=-1)
        Bt = [limbs.add(limbs.mul_small(ar, B[b]), s[b]) for b in (0, 1)]
        const = limbs.add(limbs.add(limbs.mul(t[0], s[0]), limbs.mul(t[1], s[1])), r2[r])
        c2 = limbs.add(limbs.add(limbs.mul_small(limbs.mul(t[0], ar), B[0]),
                                 limbs.mul_small(limbs.mul(t[1], ar), B[1])), const)
        e1[r] = np.concatenate([Bt[0], Bt[1], c2], axis=-1)
    return e0, e1


def g_at(pp: PublicParams, rho_x: np.ndarray, alpha: np.ndarray, tp: TailPlan, e: np.ndarray) -> np.ndarray:
    """alpha_i G_i(e_i) (the product of step 10's factors with the split) at given x_hi values e
    (N,), as signed limb arrays (N, g_limbs): the reference's value of step 10."""
    N = len(rho_x)
    e = np.asarray(e, dtype=np.int64)
    if not tp.split:
        return g_table(pp, rho_x, alpha, tp)[np.arange(N), e]
    As, aBs = split_factors(pp, rho_x, alpha, tp)
    e0, e1 = e & ((1 << tp.split) - 1), e >> tp.split
    rows = np.arange(N)
    out = limbs.zeros((N,), tp.g_limbs)
    for b in (0, 1):
        out = limbs.add(out, limbs.mul_small(aBs[b][rows, e1], As[b][rows, e0]))
    return out


def _split_digits(tp: TailPlan, s: int) -> list[tuple[tuple[int, int], tuple[int, int, int]]]:
    """Step 10 (split): the two tables' digits of u (bits [s + L, s + L + h0) and [s + L + h0,
    s + L + hb)) and their words' widths in bytes (A~_b, B~_b, and the c words less g_cut bits)."""
    c = tp.g_bytes - tp.g_cut // 8
    lo = s + tp.lo_bits
    return [((lo, lo + tp.split), (tp.a_bytes, tp.a_bytes, c)),
            ((lo + tp.split, lo + tp.hb), (tp.b_bytes, tp.b_bytes, c))]


def split_free_masks(As: list[np.ndarray], Bs: list[np.ndarray], a: np.ndarray, pad0: np.ndarray, pad1: np.ndarray,
                     cut: int, alpha_e0: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray,
                                                                np.ndarray]:
    """Step 10 (split, protocol 37), server: the masks that make entry 0 of both tables the
    client's own pads. ``pad0`` / ``pad1`` (N, 3 nG): entry 0's pads of the e0 and e1 tables as
    words [A~_0, A~_1, c1 >> cut] and [B~_0, B~_1, c2 >> cut]; ``a`` the weights (N, nG). With
    X_b = alpha A_b, Y_b = B_b (``alpha_e0``; else X_b = A_b, Y_b = alpha B_b) at e = 0:
        t_b = pA_b - X_b(0),  sg_b = pB_b - Y_b(0),
        r1 = pc1 2^cut - (X_0(0) sg_0 + X_1(0) sg_1),  r2 = pc2 2^cut - (t_0 pB_0 + t_1 pB_1)
    (mod 2^(64 nG)), so that entry 0's words X_b(0) + t_b, Y_b(0) + sg_b, c1(0) = X sg + r1 and
    c2(0) = t B~(0) + r2 are the pads (c1(0), c2(0) with zero low cut bits). Returns (tm, sg, r1,
    r2) as :func:`split_tables` takes them, limb arrays (N, 1, nG)."""
    nG = a.shape[-1]

    def word(p: np.ndarray, k: int) -> np.ndarray:
        return np.ascontiguousarray(p[:, k * nG:(k + 1) * nG])

    def limb(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x[:, None], limbs.zeros(x.shape, nG - 1)], axis=-1)

    A0 = [limb(A[:, 0]) for A in As]
    B0 = [limb(B[:, 0]) for B in Bs]
    X0 = [limbs.mul_small(a, A[:, 0]) for A in As] if alpha_e0 else A0
    Y0 = B0 if alpha_e0 else [limbs.mul_small(a, B[:, 0]) for B in Bs]
    pA, pB = [word(pad0, b) for b in (0, 1)], [word(pad1, b) for b in (0, 1)]
    tm = [limbs.sub(pA[b], X0[b]) for b in (0, 1)]
    sg = [limbs.sub(pB[b], Y0[b]) for b in (0, 1)]
    r1 = limbs.sub(limbs.shl(word(pad0, 2), cut), limbs.add(limbs.mul(X0[0], sg[0]), limbs.mul(X0[1], sg[1])))
    r2 = limbs.sub(limbs.shl(word(pad1, 2), cut), limbs.add(limbs.mul(tm[0], pB[0]), limbs.mul(tm[1], pB[1])))
    return [x[:, None, :] for x in tm], [x[:, None, :] for x in sg], r1[:, None, :], r2[:, None, :]


def client_split_product(e0_words: np.ndarray, e1_words: np.ndarray, n: int) -> np.ndarray:
    """Step 10 (split), client: h = A~_0 B~_0 + A~_1 B~_1 - c1 - c2 (mod 2^(64 n)) from its two
    entries (N, 3 n) each: [A~_0, A~_1, c1] and [B~_0, B~_1, c2]."""
    a0, a1, c1 = (e0_words[:, k * n:(k + 1) * n] for k in range(3))
    b0, b1, c2 = (e1_words[:, k * n:(k + 1) * n] for k in range(3))
    return limbs.sub(limbs.sub(limbs.add(limbs.mul(a0, b0), limbs.mul(a1, b1)), c1), c2)


def kernel_output(party: PartyContext, pp: PublicParams, *, u_pads, rho: np.ndarray | None = None,
                  delta: np.uint64 | None = None, model: KernelModelParams | None = None,
                  u: np.ndarray | None = None, lam: int = au.STAT_BITS) -> dict | int:
    """Steps 10-14 for one query, both roles, on a committed and already *checked*
    u = D(q') + rho (mod 2^M): shared by every kernel exp(-c D') whose distance protocol ends in
    such a u (this module's squared L2, :mod:`protocols.krr.laplacian_malicious`'s L1; pp.c is the
    kernel's constant). Server: ``rho`` (mod 2^M), ``model`` (``delta``: the MAC key u was
    committed under, unused since the tail has nothing to check); client: ``u`` (mod 2^M). Both:
    ``u_pads``, the random-OT keys of u's committed bits (at least bits [shift_bits, M)). Every
    message of these steps goes from the server to the client: one flight. Returns the server's
    record / the client's y (mod 2^R)."""
    defended = OutputDefense.from_dict(pp.output_defense)
    _refuse_rounding(pp)
    server = party.role == SERVER
    N, M, s = pp.n_train, pp.ring_bits, pp.shift_bits
    tp = tail_plan(pp)
    L = tp.lo_bits
    n, R = tp.chain_limbs, tp.ring_bits
    xm = (rho if server else u) >> U64(s)
    x_lo = xm & U64((1 << L) - 1)
    # 10. G table indexed by the committed x_hi: h_i = alpha_i G_i + s0_i, never wrapping, in
    # Z_2^RG (RG = 8 g_bytes: every word travels as its low g_bytes bytes, protocol 29)
    hi_digit = (s + L, M)
    RG, gb = tp.g_ring_bits, tp.g_bytes
    if server:
        alpha, need = encode_weights(model.dual_coef, pp.weight_frac_bits)
        if need > pp.weight_bits:
            raise ModelError("weights wider than the advertised weight_bits")
        nG = tp.g_limbs
        if not tp.split:
            s_prev = limbs.uniform_between(party.rng, (N,), nG, 1 << tp.lift_bits, (1 << RG) - (1 << tp.lift_bits),
                                           bits=RG)
            # every entry is s0_i, plus alpha_i G_i(e) at the 2^lut columns where G is not 0
            t = np.repeat(s_prev[:, None, :], 1 << tp.hb, axis=1)
            cols, aG = g_terms(pp, xm, alpha, tp)
            t[np.arange(N)[:, None], cols] = limbs.add(aG, s_prev[:, None, :])
            au.bound_lut(party, CLIENT, hi_digit, pads=u_pads, tables=t, widths=(gb,))
        else:
            # rank 2 (protocol 37): entry 0 of both tables is free -- its words are the client's own
            # pads there, which fix the masks t_b, sg_b, r1, r2 and hence s0 = -(r1 + r2) (each word
            # then uniform mod 2^(its width)); the c words travel without their low g_cut bits
            As, Bs = split_parts(pp, xm, tp)
            (d0, w0), (d1, w1) = _split_digits(tp, s)
            P0 = au.lut_sender_pads(u_pads, d0, w=3 * nG, widths=w0)
            P1 = au.lut_sender_pads(u_pads, d1, w=3 * nG, widths=w1)
            a = signed_limbs(alpha, nG)
            tm, sg, r1, r2 = split_free_masks(As, Bs, a, P0[1], P1[1], tp.g_cut, alpha_e0=tp.alpha_e0)
            s_prev = limbs.reduce(limbs.neg(limbs.add(r1, r2)), RG)[:, 0, :]
            e0_table, e1_table = split_tables(As, Bs, tm, sg, r1, r2, a[:, None, :], alpha_e0=tp.alpha_e0)
            lows = []
            for tab in (e0_table, e1_table):  # the c words' low g_cut bits stay here (step 10b's carry)
                c = tab[..., 2 * nG:]
                lows.append(c[..., 0] & U64((1 << tp.g_cut) - 1))
                tab[..., 2 * nG:] = limbs.shr(c, tp.g_cut)
            au.bound_lut(party, CLIENT, d0, pads=u_pads, tables=e0_table, widths=w0, first_free=True,
                         sender_pads=P0)
            au.bound_lut(party, CLIENT, d1, pads=u_pads, tables=e1_table, widths=w1, first_free=True,
                         sender_pads=P1)
        first = s_prev
        masks = []
        if tp.head_shift:  # 10b. the server's truncated share (its carry needs s0 mod 2^D: recorded)
            # (protocol 37: and the c words' low bits, whose sum at the client's digits enters h)
            masks.append((first, *lows) if tp.split else first)
            s_prev = limbs.shr(s_prev, tp.head_shift)
        s_prev = _resize(s_prev, n)  # lifted: an integer < 2^(RG - D) <= 2^R
    else:
        if not tp.split:
            h = au.bound_lut(party, CLIENT, hi_digit, pads=u_pads, values=u, w=tp.g_limbs, widths=(gb,))
        else:
            nG = tp.g_limbs
            got = []
            for d, wd in _split_digits(tp, s):
                e = au.bound_lut(party, CLIENT, d, pads=u_pads, values=u, w=3 * nG, widths=wd, first_free=True)
                e[:, 2 * nG:] = limbs.shl(e[:, 2 * nG:], tp.g_cut)  # the c word's bits [g_cut, RG)
                got.append(e)
            h = limbs.reduce(client_split_product(got[0], got[1], nG), RG)
        # 10b. (protocol 36) truncate the lifted h by D bits: the chain runs at the output scale
        p = _resize(client_truncate(h, tp.head_shift), n)  # lifted as an integer
    # 11. the masked, re-scaled public-factor chain: one bound table per digit of x_lo in Z_2^R
    # (R = 8 chain_bytes); entry 0 is free (the client's own pad, protocol 29), which fixes this
    # digit's mask s'_k = s_(k-1) g_k(0) - pad_0 (uniform in Z_2^R, inside [2^m, 2^R - 2^m) but
    # with probability 2^(m+1-R)): p_k = value_k + s_k does not wrap, both sides truncate locally
    for (a, b), t in zip(tp.digits, tp.shifts):
        digit = (s + a, s + b)
        g = digit_factors(pp, a, b)
        if server:
            box: dict[str, np.ndarray] = {}

            def z_table(pad0: np.ndarray, s_prev: np.ndarray = s_prev, g: np.ndarray = g) -> np.ndarray:
                # entry 0 is not sent (first_free): it is the pad, and s_(k-1) g_k(0) is needed only
                # for s'_k -- g_k(0) = 2^V, a shift; the products s_(k-1) g_k(d) for d >= 1
                g0 = int(g[0])
                prod0 = (limbs.shl(s_prev, g0.bit_length() - 1) if g0 and not g0 & (g0 - 1)
                         else limbs.mul_small(s_prev, g[0]))
                s_k = limbs.reduce(limbs.sub(prod0, pad0), R)
                box["s"] = s_k
                rest = limbs.sub(limbs.mul_small(s_prev[:, None, :], g[None, 1:]), s_k[:, None, :])
                return np.concatenate([pad0[:, None, :], rest], axis=1)

            au.bound_lut(party, CLIENT, digit, pads=u_pads, tables=z_table, w=n, widths=(tp.chain_bytes,),
                         first_free=True)
            masks.append(box["s"])
            s_prev = limbs.shr(box["s"], t)  # 11b. the server's truncated share: the next z uses it
        else:
            z = au.bound_lut(party, CLIENT, digit, pads=u_pads, values=u, w=n, widths=(tp.chain_bytes,),
                             first_free=True)
            p = client_truncate(limbs.reduce(client_chain_step(p, g[_digit(x_lo, a, b)], z), R), t)
    if server:
        # 13. the server's output share
        offset = int(round(model.y_offset * 2.0 ** tp.scale_bits))
        # 13a. flood the truncation carries (at most N K' units, and correlated with the client's
        # p_k mod 2^V): e_T of 2^T >= 2^40 N K' units hides them and the low bits of F_det alike
        flood = flood_draw(party, tp.flood_bits)
        y_s = (offset - limbs.total(s_prev) + flood) % (1 << R)
        # 14. (D1) fresh noise on the server's own share; nothing the client sent after step 9
        # exists, so nothing it sent can depend on it, and the client sees only y_S + e
        noised = defense.add_noise(party, defended, [y_s], R, tp.scale_bits)[0]
        # fixed width (the digits of 2^R - 1): the message's length must not vary with the share
        party.ch.send_json({"share": f"{noised:0{len(str((1 << R) - 1))}d}"})
        return {"rho": rho, "s0": first, "noise": (noised - y_s) % (1 << R), "flood": flood, "masks": masks}
    msg = party.ch.recv_json()
    try:
        y_s = int(msg["share"]) % (1 << R)
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed output share message") from None
    return client_output(p, y_s, R)


def _resize(x: np.ndarray, n: int) -> np.ndarray:
    """A non-negative integer's limbs (..., k) as (..., n): zero-extended, or its low n limbs where
    the caller knows the value is below 2^(64 n)."""
    k = x.shape[-1]
    if k >= n:
        return np.ascontiguousarray(x[..., :n])
    return np.concatenate([x, limbs.zeros(x.shape[:-1], n - k)], axis=-1)


def prepare_server(model: KernelModelParams, pp: PublicParams, reply_pads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The server's encoded X and ||x||^2 mod 2^M (query-independent, cached per model); turns
    numpy's huge-page hint off for the process before any worker is forked (protocols.mpc.pages).
    ``reply_pads`` (lattice cross term): keep that many reply pads ready
    (:class:`protocols.mpc.he_matvec_checked.ReplyPad`: the query-independent half of a session's
    reply, ~0.5 s of CPU and ~40 MB each at N = 16,384, d = 351), made here and after each session."""
    prefer_small_pages()
    key = (pp.frac_bits, pp.feature_lo, pp.feature_hi, pp.ring_bits)
    enc = getattr(model, "_secureml_malicious_encoded", None)
    if enc is None or enc[0] != key:
        X = pp.encode_features(model.X_train, "training data")
        xx = (X * X).sum(axis=1, dtype=U64)
        if pp.ring_bits < 64:
            xx &= U64((1 << pp.ring_bits) - 1)
        enc = model._secureml_malicious_encoded = (key, X, xx)
    if pp.cross_term == "he":  # the lattice plaintexts of the rows (NTT form), before the first client
        prepared = he_matvec_checked.prepare(enc[1], pp.x_bits, pp.ring_bits, owner=model)
        if reply_pads:
            he_matvec_checked.fill_pads(prepared, reply_pads)
    binding.rows_as_float(enc[1], owner=model)  # step 6's float copy of X, before the first client too
    return enc[1], enc[2]


def server_online(party: PartyContext, pp: PublicParams, k: int, model: KernelModelParams) -> None:
    """Model owner's side of k queries, one :func:`online` run each."""
    X, xx = prepare_server(model, pp)
    for _ in range(k):
        online(party, pp, model=model, X=X, xx=xx)


def client_online(party: PartyContext, pp: PublicParams, Q: np.ndarray) -> np.ndarray:
    """Query owner's side: the predictions for the rows of Q (k, d)."""
    enc = pp.encode_features(np.atleast_2d(Q), "query")
    return np.array([decode(pp, online(party, pp, q=q)) for q in enc])


def flood_draw(party: PartyContext, bits: int) -> int:
    """Step 13a (server): e_T uniform in [-2^(bits-1), 2^(bits-1)) from the server's own generator."""
    if bits <= 0:
        return 0
    words = party.rng.random_u64((bits + 63) // 64)
    e = sum(int(w) << (64 * k) for k, w in enumerate(words)) & ((1 << bits) - 1)
    return e - (1 << (bits - 1))


def reference(pp: PublicParams, model: KernelModelParams, X: np.ndarray, q: np.ndarray, rho: np.ndarray,
              masks: list[np.ndarray] | None = None) -> int:
    """F_det(q') for the server's rho, in Python integers; with the server's chain ``masks`` (its
    record), F_det + C, the honest output without e_T and e, bit-exact (tests)."""
    D = ((X.astype(object) - q.astype(object)) ** 2).sum(axis=1)
    return reference_from_distances(pp, model, D, rho, masks)


def reference_from_distances(pp: PublicParams, model: KernelModelParams, D, rho: np.ndarray,
                             masks: list[np.ndarray] | None = None) -> int:
    """Steps 10-13's output for exact integer distances D (any kernel exp(-c D')) and the
    server's rho (mod 2^M), mod 2^R: the deterministic fixed point F_det of the module docstring
    (value_0 = alpha_i G_i, value_k = floor(value_(k-1) g_k(d_k) / 2^t_k), F_det = offset + sum_i
    value_K,i), or, given the server's chain masks s_k (before truncation), F_det + C with the
    carries c_k,i = [(value_(k-1) g_k mod 2^t_k) + (s_k mod 2^t_k) >= 2^t_k] added at each digit:
    what :func:`kernel_output` gives the honest client before e_T and e."""
    M, s = pp.ring_bits, pp.shift_bits
    tp = tail_plan(pp)
    L = tp.lo_bits
    alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
    rho = np.asarray(rho, dtype=U64) & U64((1 << M) - 1)
    u = np.array([(int(Di) + int(ri)) % (1 << M) for Di, ri in zip(D, rho)], dtype=U64)
    xu, xr = u >> U64(s), rho >> U64(s)
    x_lo = xu & U64((1 << L) - 1)
    # alpha_i G_i at the client's high digit e = x_hi(u) (one table, or the split's product)
    aG = g_at(pp, xr, alpha, tp, (xu >> U64(L)).astype(np.int64))
    top = 1 << (64 * tp.g_limbs)
    vals = [w - top if w >= top // 2 else w for w in limbs.to_int(aG)]
    if tp.head_shift:  # 10b: floor(alpha G / 2^D), plus the carry against s0 mod 2^D (masks[0])
        D = tp.head_shift
        pre, vals = vals, [v >> D for v in vals]
        if masks is not None:
            s0 = masks[0]
            extra = [0] * len(vals)
            if tp.split:  # protocol 37: and the unsent low bits of the c words at the client's digits
                s0, c1_lo, c2_lo = s0
                e = (xu >> U64(L)).astype(np.int64)
                e0, e1 = e & ((1 << tp.split) - 1), e >> tp.split
                rows = np.arange(len(vals))
                extra = [int(x) + int(y) for x, y in zip(c1_lo[rows, e0], c2_lo[rows, e1])]
            lows = [w % (1 << D) for w in limbs.to_int(s0)]
            vals = [v + ((x % (1 << D)) + lo + dl) // (1 << D) for v, x, lo, dl in zip(vals, pre, lows, extra)]
            masks = masks[1:]
    for k, ((a, b), t) in enumerate(zip(tp.digits, tp.shifts)):
        g = digit_factors(pp, a, b)[_digit(x_lo, a, b)]
        pre = [v * int(gi) for v, gi in zip(vals, g)]
        vals = [x >> t for x in pre]  # Python's >> is the floor, for negative values too
        if masks is not None and t:
            lows = [w % (1 << t) for w in limbs.to_int(masks[k])]
            vals = [v + ((x % (1 << t)) + lo >= 1 << t) for v, x, lo in zip(vals, pre, lows)]
    y = int(round(model.y_offset * 2.0 ** tp.scale_bits)) + sum(vals)
    return y % (1 << tp.ring_bits)


def decode(pp: PublicParams, y: int) -> float:
    """The prediction from y (mod 2^R, scale 2^scale_bits of :func:`tail_plan`)."""
    tp = tail_plan(pp)
    mod = 1 << tp.ring_bits
    y %= mod
    return (y - mod if y >= mod // 2 else y) / (1 << tp.scale_bits)  # int / int: correctly rounded


__all__ = ["online", "kernel_output", "server_online", "client_online", "reference", "reference_from_distances",
           "decode", "flood_draw", "plan", "tail_plan", "TailPlan", "client_factor", "client_chain_step",
           "client_output", "client_truncate", "client_split_product", "split_factors", "g_at", "g_terms", "G_SPLIT",
           "digit_factors", "MAX_HI_BITS"]
