"""capture_daemon/redact.py's prefilter: the anchor test, the guards and the gates never keep a
rule from running where it would match.

`_redact` decides from cheap tests which rules run at all (a substring test per anchor, a guard
right after each anchor, then the gate looks); only those rules run. Every test here holds the
prefilter to running every rule (`precheck=False`): each rule that matches anywhere in a text is
selected, each anchored rule at every offset where it matches, and the redacted text is the same.

Fake secrets are assembled from pieces, as in test_redact.py.
"""

from __future__ import annotations

import itertools
import random
import re

import pytest

from capture_daemon.redact import _GATES, _RULES, _families, _gate_starts, _redact, redact_text
from tests.secret_corpus import BENIGN_CASES, SECRET_CASES
from tests.test_redact import HEX, NEGATIVE, POSITIVE, fake

# Every alternative of every token prefix, so that each look-behind branch is exercised.
TOKENS = [
    ("anthropic-key", "sk-" + "ant-api03-" + fake(40)),
    ("openai-key", "sk-" + fake(48)),
    ("openai-key", "sk-" + "proj-" + fake(60)),
    ("google-api-key", "AI" + "za" + fake(35)),
    ("google-oauth", "ya" + "29." + fake(40)),
    ("google-oauth", "GOC" + "SPX-" + fake(28)),
    ("huggingface-token", "hf" + "_" + fake(34)),
    *[("stripe-key", p + "_" + m + "_" + fake(24)) for p in ("sk", "rk") for m in ("live", "test")],
    ("stripe-key", "wh" + "sec_" + fake(32)),
    ("sendgrid-key", "SG" + "." + fake(22) + "." + fake(43)),
    ("twilio-key", "S" + "K" + fake(32, HEX)),
    ("npm-token", "npm" + "_" + fake(36)),
    ("pypi-token", "pypi" + "-Ag" + fake(60)),
    *[("digitalocean-token", "do" + c + "_v1_" + fake(64, HEX)) for c in "opr"],
    *[("shopify-token", "shp" + s + "_" + fake(32, HEX)) for s in ("at", "ss", "ca", "pa")],
    *[("aws-access-key-id", "A" + p + fake(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")) for p in ("KIA", "SIA")],
    *[("github-token", "gh" + c + "_" + fake(36)) for c in "pousr"],
    ("github-token", "github" + "_pat_" + fake(22) + "_" + fake(59)),
    ("gitlab-token", "gl" + "pat-" + fake(20)),
    *[("gitlab-token", "gl" + c + "t-" + fake(24)) for c in "rd"],
    *[("slack-token", "xo" + "x" + c + "-" + "1234567890-" + fake(24)) for c in "abposr"],
    ("slack-token", "xa" + "pp-1-" + "A0123456789-" + fake(40, HEX)),
    *[("slack-webhook", "https://hooks.slack.com/" + p + "/T0" + fake(8) + "/" + fake(24))
      for p in ("services", "workflows", "triggers")],
    *[("discord-webhook", "https://" + d + ".com/api/webhooks/123456789012345678/" + fake(68))
      for d in ("discord", "discordapp")],
    ("jwt", "ey" + "JhbGciOiJIUzI1NiJ9." + "ey" + "JzdWIiOiIxMjM0NTY3ODkwIn0." + fake(43)),
    ("url-password", "postgres://app:" + fake(20) + "@db.internal:5432/app"),
    ("bearer-token", "Bearer " + fake(40)),
    ("bearer-token", "bearer " + fake(40)),
]
# Prefixes added for the outside tester's list (gitleaks' and detect-secrets' rule sets).
TOKENS += [
    ("openrouter-key", "sk-" + "or-v1-" + fake(64, HEX)),
    ("openai-key", "sk-" + "svcacct-" + fake(60)),
    ("telegram-bot-token", "123456789" + ":AA" + fake(33)),
    ("discord-bot-token", "M" + fake(25) + "." + fake(6) + "." + fake(38)),
    ("mailchimp-key", fake(32, HEX) + "-us" + "14"),
    ("mailgun-key", "key" + "-" + fake(32, HEX)),
    *[("square-token", "sq0" + p + "-" + fake(43)) for p in ("atp", "csp")],
    ("square-token", "EA" + "AA" + fake(60)),
    ("facebook-token", "EA" + "AC" + fake(100)),
    ("heroku-key", "HR" + "KU-AA" + fake(58)),
    ("azure-ad-client-secret", "abc" + "8Q~" + fake(34)),
    ("databricks-token", "da" + "pi" + fake(32, HEX)),
    *[("vault-token", "hv" + c + "." + fake(90)) for c in "sbr"],
    ("doppler-token", "dp" + ".st." + fake(43)),
    *[("linear-key", "lin" + p + fake(40)) for p in ("_api_", "_oauth_")],
    ("postman-key", "PM" + "AK-" + fake(24, HEX) + "-" + fake(34, HEX)),
    *[("atlassian-token", "AT" + c + "TT3" + fake(180)) for c in "AC"],
    ("gitlab-token", "gl" + "ptt-" + fake(40, HEX)),
    *[("gitlab-token", "gl" + p + "-" + fake(24)) for p in ("soat", "cbt", "imt")],
    ("gitlab-token", "GR" + "1348941" + fake(20)),
    ("age-secret-key", "AGE-" + "SECRET-KEY-1" + fake(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")),
    *[("sentry-token", "sntry" + c + "_" + fake(64, HEX)) for c in "su"],
    ("grafana-token", "gl" + "sa_" + fake(32) + "_" + fake(8, HEX)),
    ("grafana-cloud-token", "gl" + "c_" + "+" + fake(40)),
    ("newrelic-key", "NR" + "AK-" + fake(27, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")),
    ("pulumi-token", "pul" + "-" + fake(40, HEX)),
    ("supabase-token", "sb" + "p_" + fake(40, HEX)),
    ("replicate-token", "r8" + "_" + fake(37)),
    ("groq-key", "gs" + "k_" + fake(52)),
    ("xai-key", "xa" + "i-" + fake(80)),
    ("perplexity-key", "pp" + "lx-" + fake(48)),
    *[("langsmith-key", "lsv2" + p + fake(32, HEX) + "_" + fake(10, HEX)) for p in ("_pt_", "_sk_")],
    ("rubygems-key", "rubygems" + "_" + fake(48, HEX)),
    ("dockerhub-token", "dckr" + "_pat_" + "-" + fake(30)),
    ("figma-token", "fig" + "d_" + "_" + fake(40)),
    ("notion-token", "nt" + "n_" + fake(46)),
    ("notion-token", "secret" + "_" + fake(43)),
    ("airtable-token", "pat" + fake(14) + "." + fake(64, HEX)),
    ("dynatrace-token", "dt0c01" + "." + fake(24, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + "." + fake(64, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")),
    ("terraform-token", fake(14, HEX) + ".atlas" + "v1." + fake(70)),
    ("contentful-token", "CF" + "PAT-" + fake(43)),
    ("dropbox-token", "sl" + "." + fake(140)),
    ("alibaba-key", "LT" + "AI" + fake(20)),
    ("tencent-key", "AK" + "ID" + fake(32)),
    ("firebase-key", "AAAA" + fake(7) + ":APA" + "91b" + fake(134)),
    ("mapbox-token", "sk" + ".eyJ" + fake(40) + "." + fake(22)),
    ("openshift-token", "sha256" + "~" + fake(43)),
    ("elevenlabs-key", "sk" + "_" + fake(48, HEX)),
    ("tailscale-key", "ts" + "key-auth-" + fake(12) + "-" + fake(30)),
    ("brevo-key", "xkey" + "sib-" + fake(64, HEX) + "-" + fake(16)),
    ("plaid-token", "access" + "-sandbox-" + "-".join(fake(n, HEX) for n in (8, 4, 4, 4, 12))),
    ("braintree-token", "access_token" + "$production$" + fake(16, HEX) + "$" + fake(32, HEX)),
    ("render-key", "rn" + "d_" + fake(32)),
    ("netlify-token", "nf" + "p_" + fake(40)),
    *[("fly-token", p + "_" + fake(60)) for p in ("fm2", "fo1")],
    ("buildkite-token", "bk" + "ua_" + fake(40, HEX)),
    ("circleci-token", "CCI" + "PAT_" + fake(22) + "_" + fake(40, HEX)),
    ("shippo-token", "shippo" + "_live_" + fake(40, HEX)),
    ("onepassword-token", "ops" + "_eyJ" + fake(60)),
    ("doppler-token", "dp" + ".st.dev_eu." + fake(43)),
    ("aws-ecr-token", "eyJwYXlsb2FkIjoi" + fake(60) + "=="),
    ("password-hash", "$6$" + fake(8) + "$" + fake(86)),
    ("password-hash", "$2b$12$" + fake(53)),
]
# The same at the shortest length each rule takes: the guards' length tests sit at these bounds.
TOKENS += [
    ("anthropic-key", "sk-" + "ant-" + fake(20)),
    ("openai-key", "sk-" + fake(20)),
    ("google-oauth", "ya" + "29." + fake(20)),
    ("google-oauth", "GOC" + "SPX-" + fake(20)),
    ("huggingface-token", "hf" + "_" + fake(30)),
    ("stripe-key", "sk" + "_live_" + fake(10)),
    ("stripe-key", "rk" + "_test_" + fake(10)),
    ("stripe-key", "wh" + "sec_" + fake(24)),
    ("sendgrid-key", "SG" + "." + fake(16) + "." + fake(16)),
    ("pypi-token", "pypi" + "-Ag" + fake(50)),
    ("github-token", "github" + "_pat_" + fake(10) + fake(12)),
    ("gitlab-token", "gl" + "pat-" + fake(20)),
    ("gitlab-token", "gl" + "rt-" + fake(20)),
    ("slack-token", "xo" + "xb-" + fake(10)),
    ("slack-token", "xa" + "pp-1-" + fake(10)),
    ("slack-webhook", "hooks.slack.com/services/" + fake(8)),
    ("discord-webhook", "discord.com/api/webhooks/1/" + fake(20)),
    ("jwt", "ey" + "J" + fake(5) + "." + "ey" + "J" + fake(5) + "."),
    ("bearer-token", "Bearer " + fake(16)),
]

# Names, separators and values that put more than one rule's look on the same anchor
# (`AccountKey=` is an azure-key and an assignment gate), each value short or long enough
# for one rule and not the other.
NAMES = ["AccountKey", "SharedAccessKey", "sig", "?sig", "&sig", "password", "api_key", "Token", "GITHUB_TOKEN",
         "Authorization", "authorization", "x-api-key", "STRIPE_KEY", "db.password", "name", "DB_PASS", "smtp_pass",
         "SECRET_KEY_BASE", "auth", "_auth", "$env:DB_PASSWORD", "//registry/:_password", "define('DB_PASSWORD",
         "ENV API_TOKEN", "set -gx API_TOKEN", "aws configure set aws_secret_access_key", "machine h login u password",
         "requirepass", "-passin pass", "mysql -u root -p", "sshpass -p", "curl -u bob:", "curl --user bob"]
SEPARATORS = ["=", ": ", ":", " = ", ":=", "=>", '": "', "\\\": \\\"", "' => '", "', '", '", "', " ", ""]
VALUES = ["abcdefgh1", "hunter2hunter2", "aB3dE6gH9jK2mN5pQ8sT", "Bearer " + fake(24), "Basic " + fake(20),
          "x", "self.token", fake(16, HEX), fake(86) + "==", "dXNlcjpodW50ZXIy", "abc123.def456.ghi789", "eyJx.y.z",
          "0x9E3779B1", "hunter2')", "'pw9!'"]
# What surrounds a secret in tool output: dashes, dots, colons and underscores that hit anchors
# and guards without being secrets.
CONTEXTS = ["", " ", "-", "--", "a-", "k-", "-rw-r--r-- ", "file.txt:", "12:30 ", "x=", "snake_case_", "\\n", '"', "'",
            "export ", "--token ", "--password=", "Authorization: ", "https://u:", "sk-", "a.", "9.", "mysql -p", " -u ",
            "set ", "ENV ", "machine ", "~", "1:", "pass:", "Q~", "abc8", "EA", "LT", "AT", "-us", "sk."]

ALL_TEXTS = [c[1] for c in POSITIVE] + [c[1] for c in NEGATIVE] + [c.text for c in SECRET_CASES] + [t for _, t in BENIGN_CASES]


def _fuzz_texts() -> list[str]:
    texts = [before + secret + after
             for _, secret in TOKENS for before, after in itertools.product(CONTEXTS, CONTEXTS[:8])]
    texts += [n + s + v for n, s, v in itertools.product(NAMES, SEPARATORS, VALUES)]
    rng = random.Random(11)
    pieces = [t for _, t in TOKENS] + ALL_TEXTS + CONTEXTS + [n + s for n, s in itertools.product(NAMES, SEPARATORS)]
    for _ in range(600):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(2, 6))))
    return texts


FUZZ = _fuzz_texts()


def _assert_gates_cover(text: str) -> None:
    starts = _gate_starts(text)
    for i, rule in enumerate(_RULES):
        if rule.anchored:
            # Anchored rules are tried only at the gate offsets: every offset where the rule
            # matches must be one.
            for pos in range(len(text)):
                if rule.pattern.match(text, pos):
                    assert pos in starts.get(i, []), (rule.kind, pos, text)
        elif rule.pattern.search(text):
            assert i in starts, (rule.kind, text)


def _assert_every_look_is_reported(text: str) -> None:
    """At every anchor, each look that holds behind a guard that holds is reported, not only the
    first (the guards themselves are held to the rules by `_assert_gates_cover`)."""
    starts = _gate_starts(text)
    for gate in _GATES:
        for rule, look, guard in zip(gate.rules, gate.looks, gate.guards):
            for m in guard.finditer(text):
                if look.match(text, m.start() + len(gate.anchor)):
                    assert m.start() in starts.get(rule, []), (_RULES[rule].kind, gate.anchor, m.start(), text)


def test_anchor_families_share_a_lower_case_word() -> None:
    # One test of the family word in the lower-cased text stands for each member's own test, so
    # the word must be in every member, whatever its case; a word of one member is no family.
    assert _families(["password", "PASSWORD", "pass", "rclone", "Token", "token"]) == {
        "password": "pass", "PASSWORD": "pass", "pass": "pass", "Token": "token", "token": "token"}
    for gate in _GATES:
        if gate.family:
            assert gate.family in gate.anchor.lower() and gate.family == gate.family.lower(), gate.anchor


@pytest.mark.parametrize("text", ["GRANT ALL TO app IDENTIFIED BY 'Xk9mPq2vL7'", "export MY_PASSWORD='Xk9mPq2vL7'",
                                  "<INPUT type=password value=Xk9mPq2vL7>", "a001 LOGIN admin Xk9mPq2vL7\n"])
def test_an_anchor_in_upper_case_passes_its_family_test(text: str) -> None:
    _assert_gates_cover(text)
    assert "Xk9mPq2vL7" not in redact_text(text)


def test_every_rule_has_an_example_here_or_in_test_redact() -> None:
    texts = ALL_TEXTS + [t for _, t in TOKENS]
    missing = [r.kind for r in _RULES if not any(r.pattern.search(t) for t in texts)]
    assert not missing


@pytest.mark.parametrize(("kind", "secret"), TOKENS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(TOKENS)])
def test_every_token_prefix_passes_the_prefilter(kind: str, secret: str) -> None:
    for before, after in itertools.product(CONTEXTS, [" ", "\n", "", '"']):
        text = before + secret + after
        _assert_gates_cover(text)
        assert _redact(text) == _redact(text, precheck=False), text
        if not before or not re.match(r"[A-Za-z0-9_.-]", before[-1]):
            # (A token glued to a word or another token is not a token: the left-boundary rule.)
            out = redact_text(text)
            assert secret not in out and "[REDACTED:" in out, text
            assert f"[REDACTED:{kind}]" in out or before == "Authorization: ", text  # that one is the header's


@pytest.mark.parametrize("text", ALL_TEXTS)
def test_positive_and_negative_examples_pass_the_prefilter(text: str) -> None:
    _assert_gates_cover(text)
    _assert_every_look_is_reported(text)


def test_fuzzed_texts_pass_the_prefilter() -> None:
    for text in FUZZ:
        _assert_gates_cover(text)
        _assert_every_look_is_reported(text)
        assert _redact(text) == _redact(text, precheck=False), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A value too short for azure-key (16+) is still an assignment under a key name: the
        # two rules' looks hold at the same `=`, and both must run.
        ("SharedAccessKey=hunter2hunter2", "SharedAccessKey=[REDACTED:assignment]"),
        # (`;` then another setting ends the value; `abcdefgh1;x` alone is now one value, a config
        # line's run: tests/test_redact.py "config-line-value-with-punctuation".)
        ("AccountKey=abcdefgh1;EndpointSuffix=x", "AccountKey=[REDACTED:assignment];EndpointSuffix=x"),
        ("-rw-r--r-- 1 dev dev 4096 Nov 25 17:39 file.txt", "-rw-r--r-- 1 dev dev 4096 Nov 25 17:39 file.txt"),
    ],
)
def test_rules_sharing_an_anchor_both_run(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert _redact(text) == _redact(text, precheck=False)


def test_short_and_anchorless_strings_come_back_unchanged() -> None:
    for text in ["", "ls", "Bash", "/home/dev/project", "benchmark prompt 12 compare a and b", "x" * 500]:
        assert _redact(text) == (text, 0)
