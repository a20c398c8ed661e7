"""Redaction leaks found by probing with random passwords that hold punctuation: each case
kept three or more characters of the password in clear before its fix. Beside each, look-alikes
that are no secret and must stay as they are."""

from __future__ import annotations

import pytest

from capture_daemon.redact import redact_text

A = "[REDACTED:assignment]"
C = "[REDACTED:cli-flag]"
S = "[REDACTED:sql-password]"


# An escaped quote inside a quoted value: the value was read to the escape, and the part after
# it stayed.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mysql -u root -p'k'\\''g23a!sAFRQQ' db", f"mysql -u root -p'{C}' db"),
        ("psql --password 'iVa'\\''dTkw{J|u' -h db", f"psql --password '{C}' -h db"),
        ("sshpass -p 'Lb9q'\"'\"'HUSk7x' ssh u@h", f"sshpass -p '{C}' ssh u@h"),
        ("curl -u 'bob:Xy7'\\''Kp9qZ' https://x.io", f"curl -u 'bob:{C}' https://x.io"),
        ("export DB_PASSWORD='h6gLCf'\\''YyHE7d'\necho ok", f"export DB_PASSWORD='{A}'\necho ok"),
        ("db:\n  password: 'cmxYU''avKk3'\n  host: x", f"db:\n  password: '{A}'\n  host: x"),
        ("$pw = ConvertTo-SecureString 'wJJY''uLQ&FH' -AsPlainText -Force",
         f"$pw = ConvertTo-SecureString '{C}' -AsPlainText -Force"),
        ('tool --password "h;CeP2yn\\"ESPR" -h db', f'tool --password "{C}" -h db'),
        ('curl -u "bob:P\\"8->iZXkxM" https://x.io', f'curl -u "bob:{C}" https://x.io'),
        ('$pw = ConvertTo-SecureString "tMYR`"%Rh4pAR" -AsPlainText -Force',
         f'$pw = ConvertTo-SecureString "{C}" -AsPlainText -Force'),
        ('Connect-Thing -Password "D7`".PRN2>htf3" -User bob', f'Connect-Thing -Password "{C}" -User bob'),
        ("CREATE USER 'app'@'%' IDENTIFIED BY 'PSrD~d\\heZkJuiL4';", f"CREATE USER 'app'@'%' IDENTIFIED BY '{S}';"),
        ("CREATE USER app WITH PASSWORD 'Ab''c\\'9xQ2';", f"CREATE USER app WITH PASSWORD '{S}';"),
    ],
)
def test_an_escaped_quote_does_not_end_the_value(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "x = '[REDACTED:assignment]''",  # a marker not at a quoted value's start
        "print('a''b')",
        "name = '' if x else 'y'",
        'csv = "a,""b"",c"',
        'echo "it\\"s fine" --password',
        "cmd = f'{a}''{b}'",
        "WHERE name = 'O''Brien' AND role = 'admin'",
    ],
)
def test_escaped_quotes_without_a_secret_stay(text: str) -> None:
    assert redact_text(text) == text


# Space-separated settings: the value read stopped at punctuation inside it and kept the rest.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM python:3.12\nENV DB_PASSWORD Q&3aWEtY5qPgw\nRUN true", f"FROM python:3.12\nENV DB_PASSWORD {A}\nRUN true"),
        ("FROM python:3.12\nENV DB_PASSWORD 7Bz=YbGcv)8RPP\nRUN true", f"FROM python:3.12\nENV DB_PASSWORD {A}\nRUN true"),
        ("ENV DB_PASSWORD (9frqGrf=vK2", f"ENV DB_PASSWORD {A}"),
        ("setenv DB_PASSWORD yR(9frqgrf=vK", f"setenv DB_PASSWORD {A}"),
        ("set -gx DB_PASSWORD rM{3<v5hkXCp", f"set -gx DB_PASSWORD {A}"),
        ("SetEnv DB_PASSWORD eA)NrvsQJYN~8", f"SetEnv DB_PASSWORD {A}"),
        ("fastcgi_param DB_PASSWORD M;JC^6yC!aLLR4;", f"fastcgi_param DB_PASSWORD {A};"),
        ("ENV DB_PASSWORD=E(ByA5`qAR-gmV9Q\nRUN true", f"ENV DB_PASSWORD={A}\nRUN true"),
        ("ENV DB_PASSWORD=7PG7|$e5Wc!MCLA\nRUN true", f"ENV DB_PASSWORD={A}\nRUN true"),
    ],
)
def test_a_spaced_setting_value_runs_to_its_space(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ENV DB_PASSWORD $(cat /run/secrets/db)",
        "ENV DB_PASSWORD ${DB_PASSWORD}",
        "ENV DB_PASSWORD=${DB_PASSWORD}",
        "ENV DB_PASSWORD <your-password>",
        "setenv DB_PASSWORD `cat ~/.pw`",
        "set -gx API_TOKEN (op read op://dev/api/token)",
        "fastcgi_param DB_PASSWORD $db_password;",
        "SetEnv DB_PASSWORD get_password()",
        "ENV DB_PASSWORD=$DB_PASSWORD",
        "set the DB_PASSWORD variable to something",
    ],
)
def test_spaced_settings_that_are_code_or_references_stay(text: str) -> None:
    assert redact_text(text) == text


N = "[REDACTED:netrc-password]"
R = "[REDACTED:redis-password]"


# netrc and redis.conf read a token to whitespace: a quote, a backslash or (redis) a `#` inside
# the password ended the value read, and the rest stayed.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("machine api.x.io login bob password ZFmuH'i2%KUhvG\n", f"machine api.x.io login bob password {N}\n"),
        ('machine api.x.io login bob password BtDw\'KPn"RefdbUG\n', f"machine api.x.io login bob password {N}\n"),
        ("machine api.x.io\n  login bob\n  password Ab\\c9Xq2z\n", f"machine api.x.io\n  login bob\n  password {N}\n"),
        ("bind 127.0.0.1\nrequirepass it3Wy7Z%djUy#XLU\nport 6379", f"bind 127.0.0.1\nrequirepass {R}\nport 6379"),
        ("requirepass mdY\\ektwQWR6\n", f"requirepass {R}\n"),
        ("masterauth k9'jz\"vzsjZ\n", f"masterauth {R}\n"),
        ('CONFIG SET requirepass "Ab\\"c9Xq2z"', f'CONFIG SET requirepass "{R}"'),
        # In a JSON string, its closing quote and its escaped breaks still end the password.
        ('{"netrc": "machine h login u password Xy7Kp9q\\nmachine g"}', f'{{"netrc": "machine h login u password {N}\\nmachine g"}}'),
        ('{"conf": "requirepass Xy7Kp9q"}', f'{{"conf": "requirepass {R}"}}'),
        ("echo 'machine h login u password Xy7Kp9q' >> ~/.netrc", f"echo 'machine h login u password {N}' >> ~/.netrc"),
    ],
)
def test_a_config_token_runs_to_whitespace(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "machine translation password reset",
        "requirepass <your-password>",
    ],
)
def test_config_token_look_alikes_stay(text: str) -> None:
    assert redact_text(text) == text


# A connection string's value runs to its `;`: a space or a quote in the password ended the
# value read, and the rest stayed (or all of it, when the head was too short to judge).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Server=db;Database=app;User Id=bob;Password=8 6UX4LShGW;Encrypt=true",
         f"Server=db;Database=app;User Id=bob;Password={A};Encrypt=true"),
        ('Server=db;User Id=bob;Password=e"b@W3Q3qjw&C2gZ;Encrypt=true', f"Server=db;User Id=bob;Password={A};Encrypt=true"),
        ("Server=db;User Id=bob;Password=c)VdpQeR,xE;Encrypt=true", f"Server=db;User Id=bob;Password={A};Encrypt=true"),
        ("Driver={ODBC};Server=db;Uid=sa;Pwd=ab cd!9Xq;", f"Driver={{ODBC}};Server=db;Uid=sa;Pwd={A};"),
        ('{"ConnectionStrings": {"Default": "Server=db;User Id=bob;Password=incHD/n Vg8fH;"}}',
         f'{{"ConnectionStrings": {{"Default": "Server=db;User Id=bob;Password={A};"}}}}'),
        ('{"Default": "Server=db;User Id=bob;Password=K gfM6dfM2"}', f'{{"Default": "Server=db;User Id=bob;Password={A}"}}'),
        ("Server=db;User Id=bob;Password=egFMYTF4.dt;", f"Server=db;User Id=bob;Password={A};"),
    ],
)
def test_a_connection_string_password_runs_to_its_semicolon(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        'conn = "Server=db;User Id=bob;Password=" + password + ";"',
        "conn = 'Server=db;User Id=bob;Password=' + password + ';'",
        'conn = $"Server=db;User Id=bob;Password={password};"',
        "Server=db;User Id=bob;Password=$(DB_PASSWORD);",
        "Server=db;User Id=bob;Password=<your password>;",
        "Server=db;User Id=bob;Password=%DB_PASSWORD%;",
        'conn = `Server=db;Password=${pw};`',
        "x = 1; password = get_password(user, host); y = 2",
    ],
)
def test_connection_string_look_alikes_stay(text: str) -> None:
    assert redact_text(text) == text


P = "[REDACTED:pgpass-password]"


# A .pgpass line's password runs to the line's end: one holding a space was no match at all.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("db.internal:5432:app:bob:is v[yzEyAFE\n", f"db.internal:5432:app:bob:{P}\n"),
        ("db.internal:5432:app:bob:Kv}5di[xmu ta4\nnext", f"db.internal:5432:app:bob:{P}\nnext"),
        ("localhost:*:*:postgres:correct horse battery staple", f"localhost:*:*:postgres:{P}"),
        ('{"out": "db:5432:app:bob:EqyLW jxfh9\\nok"}', f'{{"out": "db:5432:app:bob:{P}\\nok"}}'),
        ("echo 'db:5432:app:bob:Ab c9 Xq2z' >> ~/.pgpass", f"echo 'db:5432:app:bob:{P}' >> ~/.pgpass"),
    ],
)
def test_a_pgpass_password_with_a_space_goes(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "db.internal:5432:app:bob: connection refused\n",
        "2024-01-01 12:30:45:00 server started\n",
        "<tr><td>12:30:45:10:99 elapsed\n</td></tr>",
        "<value>12:30:45:10:99 elapsed</value>",
        "root:x:0:0:root user:/root:/bin/bash\n",
        "ports:\n  - 8080:80\n",
    ],
)
def test_pgpass_look_alikes_stay(text: str) -> None:
    assert redact_text(text) == text


# A bare value followed by a closing bracket read as code's argument (`f(token=tok)`), so the
# password stayed; on a config line that opened no bracket the bracket is the password's end.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: RC9VPYMAXaFg)", f"password: {A})"),
        ("db:\n  password: RC9VPYMAXaFg)\n  user: x", f"db:\n  password: {A})\n  user: x"),
        ("DB_PASSWORD=RC9VPYMAXaFg}\nX=1", f"DB_PASSWORD={A}}}\nX=1"),
    ],
)
def test_a_closing_bracket_after_a_config_value_is_no_call(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "f(password=pw1)",
        "connect(\n    user=user,\n    password=pw1)",
        "const o = {\n  user: u,\n  password: pw})",
        "(password: see below)",
        "the password: none)",
        "{password: pw1}",
    ],
)
def test_code_closing_a_bracket_after_a_value_stays(text: str) -> None:
    assert redact_text(text) == text


PR = "[REDACTED:prose-secret]"


# Prose that hands a password over: a quote, a backslash or an opening bracket in it, a colon
# after "is", or a dot that read as a module's name, and it stayed whole.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the root password is Ug\"a3tM,LF-sa and it works", f"the root password is {PR} and it works"),
        ("the root password is ZY2kR^'Wk^Jx and it works", f"the root password is {PR} and it works"),
        ("The admin password is k9\\qnjEczgKpakf", f"The admin password is {PR}"),
        ("My password is: NbBnd8dX#5g", f"My password is: {PR}"),
        ("My password is: p?{yg=SfKT", f"My password is: {PR}"),
        ("the root password is <Gf8yy$Rq2x now", f"the root password is {PR} now"),
        ("the root password is (9frqGr=vK2 now", f"the root password is {PR} now"),
        ("the root password is ey.azHJmMa7 and it works", f"the root password is {PR} and it works"),
        ("The API key is: nZhR-CCNsQYi", f"The API key is: {PR}"),
        ('the password is "x1y2z3Q".', f'the password is "{PR}".'),
    ],
)
def test_prose_handing_over_a_password_with_punctuation(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "the password is <your-password> for now",
        "the password is (see below) for now",
        "the password is: stored in Vault",
        "the password is {{ vault_pw }} here",
        "the token is tokenizer.eos_token here",
        "the password is 'foo' or 'bar'",
        "My password is: incorrect",
        "the password is well-known",
        "the password is [redacted] here",
        "the password is: os.environ.get",
    ],
)
def test_prose_without_a_secret_stays(text: str) -> None:
    assert redact_text(text) == text


# Over-redaction: YAML's null and an alias name no secret, and were marked as one.
@pytest.mark.parametrize(
    "text",
    [
        "password: ~",
        "db:\n  password: ~\n  user: x",
        "password: *db_pw",
        "db:\n  password: *default_password\n",
        "base: &Xy7Kp9q2 x\npassword: *Xy7Kp9q2",
    ],
)
def test_yaml_null_and_alias_stay(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: *Xy7Kp9q", f"password: {A}"),  # no anchor, and a generated password's look
        ("password: ~Xy7Kp9q2", f"password: {A}"),
        ("password: &db_pw Xy7Kp9q\nother_password: *db_pw", f"password: &db_pw {A}\nother_password: *db_pw"),
    ],
)
def test_yaml_values_that_only_open_like_null_or_alias_go(text: str, expected: str) -> None:
    assert redact_text(text) == expected


# A dotted password on a config line read as an attribute's path, and stayed.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: mRcyBM8emGY.XAF\nuser: bob", f"password: {A}\nuser: bob"),
        ("DB_PASSWORD=HL7QRFkdDDVP.kM\n", f"DB_PASSWORD={A}\n"),
        ("SetEnv DB_PASSWORD VEmbiWZbX.GV7Ma", f"SetEnv DB_PASSWORD {A}"),
    ],
)
def test_a_dotted_password_on_a_config_line_goes(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "  password = self.dbPassword2.value",
        "password: config.dbPassword2",
        "    password=settings.DbPassword1,",
        "PASSWORD=Settings.DbPass2",
        "password: settings.db_password",
        "token = self.token",
    ],
)
def test_dotted_paths_under_a_password_name_stay(text: str) -> None:
    assert redact_text(text) == text
