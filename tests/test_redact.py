"""capture_daemon/redact.py: every kind of secret goes, everything around it stays.

The fake secrets are assembled from pieces at import time so that no file in the repo holds a
string that a secret scanner (or GitHub push protection) would take for a live credential.
"""

from __future__ import annotations

import functools
import json
import random
import re
import time

import pytest

from capture_daemon.redact import (
    _GATES,
    _redact,
    is_secret_name,
    redact_text,
    redact_text_with_count,
    redact_value,
    redact_value_with_count,
)
from tests.secret_corpus import BENIGN_CASES, SECRET_CASES, SecretCase

ALNUM = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7"


def fake(n: int, alphabet: str = ALNUM) -> str:
    return (alphabet * (n // len(alphabet) + 1))[:n]


HEX = "0123456789abcdef"
ANTHROPIC = "sk-" + "ant-api03-" + fake(93) + "AA"
OPENAI = "sk-" + fake(48)
OPENAI_PROJ = "sk-" + "proj-" + fake(60) + "_" + fake(40) + "-" + fake(20)
GOOGLE = "AI" + "za" + "Sy" + fake(33)
GOOGLE_OAUTH = "ya" + "29." + fake(60)
GOOGLE_CLIENT_SECRET = "GOC" + "SPX-" + fake(28)
HF = "hf" + "_" + fake(34)
STRIPE = "sk" + "_live_" + fake(24)
STRIPE_RESTRICTED = "rk" + "_live_" + fake(24)
STRIPE_WEBHOOK = "wh" + "sec_" + fake(32)
SENDGRID = "SG" + "." + fake(22) + "." + fake(43)
TWILIO = "S" + "K" + fake(32, HEX)
NPM = "npm" + "_" + fake(36)
PYPI = "pypi" + "-AgEIcHlwaS5vcmc" + fake(60)
DIGITALOCEAN = "dop" + "_v1_" + fake(64, HEX)
SHOPIFY = "shp" + "at_" + fake(32, HEX)
AWS_ID = "AK" + "IA" + fake(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
AWS_SESSION_ID = "AS" + "IA" + fake(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
AWS_SECRET = fake(30) + "/" + fake(9)
AZURE_KEY = fake(86) + "=="
GHP = "gh" + "p_" + fake(36)
GHO = "gh" + "o_" + fake(36)
GHU = "gh" + "u_" + fake(36)
GHS = "gh" + "s_" + fake(36)
GHR = "gh" + "r_" + fake(36)
GITHUB_PAT = "github" + "_pat_" + fake(22) + "_" + fake(59)
GITLAB = "gl" + "pat-" + fake(20)
SLACK_BOT = "xo" + "xb-" + "1234567890-1234567890123-" + fake(24)
SLACK_USER = "xo" + "xp-" + "1234567890-1234567890123-1234567890123-" + fake(32)
SLACK_APP = "xa" + "pp-1-" + "A0123456789-1234567890123-" + fake(64, HEX)
SLACK_HOOK_PATH = "T0" + fake(8, "ABCDEFGHJK0123") + "/B0" + fake(8, "ABCDEFGHJK0123") + "/" + fake(24)
DISCORD_HOOK_PATH = "123456789012345678/" + fake(68)
JWT = "ey" + "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "ey" + "JzdWIiOiIxMjM0NTY3ODkwIn0." + fake(43)
BEARER = fake(40)
KEY_BODY_LINES = [fake(64, ALNUM + "+/") for _ in range(5)] + [fake(20, ALNUM + "+/") + "=="]
RSA_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_BODY_LINES) + "\n-----END RSA PRIVATE KEY-----"


def marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def nested(value: object, depth: int) -> str:
    """`value` as JSON inside a JSON string `depth - 1` times over (depth 3: `"\\"{\\\\\\"a\\\\\\": ...}\\""`)."""
    text = json.dumps(value)
    for _ in range(depth - 1):
        text = json.dumps(text)
    return text


PW = "Xy7Kp9qLm"
# The POSITIVE cases below that only a decoded view reads (their ids start so).
READ_IN_VIEWS = ("escaped-", "percent-encoded-", "html-entit", "full-width-", "small-form-", "math-letters-", "modifier-colon",
                 "zero-width-", "word-joiner-", "soft-hyphen-", "bom-in-", "hex-escaped-", "unicode-escaped-", "no-break-",
                 "combining-", "variation-", "other-script-")


# (id, text, the text after redaction)
POSITIVE = [
    # --- provider keys ---
    ("anthropic", f"ANTHROPIC_API_KEY={ANTHROPIC}", "ANTHROPIC_API_KEY=[REDACTED:anthropic-key]"),
    ("anthropic-prose", f"use key {ANTHROPIC} for now.", "use key [REDACTED:anthropic-key] for now."),
    ("openai", f"export OPENAI_API_KEY={OPENAI}\nls", "export OPENAI_API_KEY=[REDACTED:openai-key]\nls"),
    ("openai-proj", f"client = OpenAI(api_key='{OPENAI_PROJ}')", "client = OpenAI(api_key='[REDACTED:openai-key]')"),
    ("google", f'"key": "{GOOGLE}",', '"key": "[REDACTED:google-api-key]",'),
    ("google-oauth", f"access {GOOGLE_OAUTH} ok", "access [REDACTED:google-oauth] ok"),
    ("google-client-secret", f"secret={GOOGLE_CLIENT_SECRET}", "secret=[REDACTED:google-oauth]"),
    ("huggingface", f"huggingface-cli login --token {HF}", "huggingface-cli login --token [REDACTED:huggingface-token]"),
    ("stripe", f"stripe.api_key = '{STRIPE}'", "stripe.api_key = '[REDACTED:stripe-key]'"),
    ("stripe-restricted", f"key {STRIPE_RESTRICTED};", "key [REDACTED:stripe-key];"),
    ("stripe-webhook", f"endpoint_secret = {STRIPE_WEBHOOK}", "endpoint_secret = [REDACTED:stripe-key]"),
    ("sendgrid", f"SG key: {SENDGRID}.", "SG key: [REDACTED:sendgrid-key]."),
    ("twilio", f"twilio api {TWILIO} x", "twilio api [REDACTED:twilio-key] x"),
    ("npm", f"//registry.npmjs.org/:_authToken={NPM}", "//registry.npmjs.org/:_authToken=[REDACTED:npm-token]"),
    ("pypi", f"password = {PYPI}\n", "password = [REDACTED:pypi-token]\n"),
    ("digitalocean", f"doctl auth init -t {DIGITALOCEAN}", "doctl auth init -t [REDACTED:digitalocean-token]"),
    ("shopify", f"X-Shopify-Access-Token {SHOPIFY}", "X-Shopify-Access-Token [REDACTED:shopify-token]"),
    # --- cloud credentials ---
    ("aws-id", f"aws_access_key_id = {AWS_ID}", "aws_access_key_id = [REDACTED:aws-access-key-id]"),
    ("aws-session-id", f"AccessKeyId: {AWS_SESSION_ID}\n", "AccessKeyId: [REDACTED:aws-access-key-id]\n"),
    (
        "aws-secret",
        f"[default]\naws_secret_access_key = {AWS_SECRET}\nregion = us-east-1",
        "[default]\naws_secret_access_key = [REDACTED:assignment]\nregion = us-east-1",
    ),
    ("aws-secret-env", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET} cmd", "AWS_SECRET_ACCESS_KEY=[REDACTED:assignment] cmd"),
    (
        "azure-connection-string",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=[REDACTED:azure-key];EndpointSuffix=core.windows.net",
    ),
    (
        "azure-service-bus",
        f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={AZURE_KEY}",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=[REDACTED:azure-key]",
    ),
    (
        "azure-sas",
        "https://acct.blob.core.windows.net/c/f.txt?sv=2022-11-02&se=2030&sig=" + fake(43) + "%3D end",
        "https://acct.blob.core.windows.net/c/f.txt?sv=2022-11-02&se=2030&sig=[REDACTED:azure-sas] end",
    ),
    # --- GitHub, GitLab, Slack, Discord ---
    ("github-ghp", f"export GITHUB_TOKEN={GHP}", "export GITHUB_TOKEN=[REDACTED:github-token]"),
    ("github-gho", f"oauth: {GHO}", "oauth: [REDACTED:github-token]"),
    ("github-ghu", f"({GHU})", "([REDACTED:github-token])"),
    ("github-ghs", f"token {GHS} expires", "token [REDACTED:github-token] expires"),
    ("github-ghr", f'"refresh": "{GHR}"', '"refresh": "[REDACTED:github-token]"'),
    # Glued to a word by `_` or `-`, as in a file named after the token: the prefix's shape holds.
    ("glued-ghp", f"cat /tmp/backup_{GHP}.txt", "cat /tmp/backup_[REDACTED:github-token].txt"),
    ("glued-anthropic", f"echo token-{ANTHROPIC}", "echo token-[REDACTED:anthropic-key]"),
    ("glued-gitlab", f"cp creds_{GITLAB}.json .", "cp creds_[REDACTED:gitlab-token].json ."),
    ("glued-aws-id", f"ls keys_{AWS_ID}/note.txt", "ls keys_[REDACTED:aws-access-key-id]/note.txt"),
    (
        "github-pat",
        f"git clone https://{GITHUB_PAT}@github.com/o/r.git",
        "git clone https://[REDACTED:github-token]@github.com/o/r.git",
    ),
    ("gitlab", f"PRIVATE-TOKEN: {GITLAB}", "PRIVATE-TOKEN: [REDACTED:gitlab-token]"),
    ("slack-bot", f"SLACK_BOT_TOKEN={SLACK_BOT}", "SLACK_BOT_TOKEN=[REDACTED:slack-token]"),
    ("slack-user", f"token: {SLACK_USER}", "token: [REDACTED:slack-token]"),
    ("slack-app", f"app token {SLACK_APP}", "app token [REDACTED:slack-token]"),
    (
        "slack-webhook",
        f'curl -X POST -d "{{}}" https://hooks.slack.com/services/{SLACK_HOOK_PATH}',
        'curl -X POST -d "{}" https://hooks.slack.com/services/[REDACTED:slack-webhook]',
    ),
    (
        "discord-webhook",
        f"https://discord.com/api/webhooks/{DISCORD_HOOK_PATH} sent",
        "https://discord.com/api/webhooks/[REDACTED:discord-webhook] sent",
    ),
    # --- bearer tokens and JWTs ---
    ("authorization-header", f"Authorization: Bearer {BEARER}\r\n", "Authorization: Bearer [REDACTED:authorization]\r\n"),
    (
        "authorization-curl",
        f"curl -H 'authorization: token {BEARER}' https://api.example.org",
        "curl -H 'authorization: token [REDACTED:authorization]' https://api.example.org",
    ),
    (
        "authorization-json",
        f'{{"headers": {{"Authorization": "Basic {BEARER}"}}}}',
        '{"headers": {"Authorization": "Basic [REDACTED:authorization]"}}',
    ),
    (
        "bearer-bare",
        f'headers["Authorization"] = "Bearer {BEARER}"',
        'headers["Authorization"] = "Bearer [REDACTED:authorization]"',
    ),
    ("jwt", f"id_token_hint={JWT}&x=1", "id_token_hint=[REDACTED:jwt]&x=1"),
    ("jwt-bearer", f"Authorization: Bearer {JWT}", "Authorization: Bearer [REDACTED:jwt]"),
    # --- passwords in URLs: user and host stay ---
    (
        "url-postgres",
        "DATABASE_URL=postgres://app:s3cr3t-Pa55@db.internal:5432/app",
        "DATABASE_URL=postgres://app:[REDACTED:url-password]@db.internal:5432/app",
    ),
    ("url-redis-no-user", "redis://:hunter2@cache:6379/0", "redis://:[REDACTED:url-password]@cache:6379/0"),
    (
        "url-mongodb-srv",
        'client = MongoClient("mongodb+srv://admin:Xy9%40z@cluster0.mongodb.net/db")',
        'client = MongoClient("mongodb+srv://admin:[REDACTED:url-password]@cluster0.mongodb.net/db")',
    ),
    ("url-https", "see https://bob:pa55word@example.org/path", "see https://bob:[REDACTED:url-password]@example.org/path"),
    # --- assignments: the name stays, the value goes ---
    ("env-export", "export MY_SERVICE_TOKEN=abc123def456\n", "export MY_SERVICE_TOKEN=[REDACTED:assignment]\n"),
    ("yaml-password-quoted", 'DB_PASSWORD: "x"', 'DB_PASSWORD: "[REDACTED:assignment]"'),
    ("yaml-password-bare", "  password: hunter2\n  user: bob", "  password: [REDACTED:assignment]\n  user: bob"),
    ("kv-password", "password=hunter2", "password=[REDACTED:assignment]"),
    (
        "json-api-key",
        '{"api_key": "abc123", "model": "x", "n": 1}',
        '{"api_key": "[REDACTED:assignment]", "model": "x", "n": 1}',
    ),
    (
        "json-escaped",
        '{\\"user\\": \\"a\\", \\"password\\": \\"hunter2\\", \\"n\\": 1}',
        '{\\"user\\": \\"a\\", \\"password\\": \\"[REDACTED:assignment]\\", \\"n\\": 1}',
    ),
    ("json-number", '{"pin_password": 123456, "x": 2}', '{"pin_password": [REDACTED:assignment], "x": 2}'),
    ("django", "SECRET_KEY = 'django-insecure-8f#k2@x!q'", "SECRET_KEY = '[REDACTED:assignment]'"),
    ("client-secret", "client_secret: 9f8e7d6c5b4a", "client_secret: [REDACTED:assignment]"),
    ("camel-case", 'const cfg = { clientSecret: "s3cr3t", id: 1 }', 'const cfg = { clientSecret: "[REDACTED:assignment]", id: 1 }'),
    ("header-api-key", "X-Api-Key: 4f5e6d7c8b9a\n", "X-Api-Key: [REDACTED:assignment]\n"),
    ("passwd", "passwd=letmein", "passwd=[REDACTED:assignment]"),
    ("pwd-suffix", "DB_PWD=letmein99", "DB_PWD=[REDACTED:assignment]"),
    ("passphrase", "SSH_PASSPHRASE='correct horse battery staple'", "SSH_PASSPHRASE='[REDACTED:assignment]'"),
    ("go-walrus", 'token := "abc123xyz"', 'token := "[REDACTED:assignment]"'),
    ("php-arrow", "'password' => 'hunter2',", "'password' => '[REDACTED:assignment]',"),
    ("query-string", "GET /cb?access_token=abc123&state=xyz", "GET /cb?access_token=[REDACTED:assignment]&state=xyz"),
    ("upper-key", "STRIPE_KEY=abcdef123456", "STRIPE_KEY=[REDACTED:assignment]"),
    ("ini-file", "[pypi]\nusername = __token__\npassword = mypassword\n", "[pypi]\nusername = __token__\npassword = [REDACTED:assignment]\n"),
    (
        "ini-file-json-escaped",
        '{"stdout": "[server]\\npassword = letmein\\nport = 22"}',
        '{"stdout": "[server]\\npassword = [REDACTED:assignment]\\nport = 22"}',
    ),
    ("spaced", "API_KEY   =   abc123", "API_KEY   =   [REDACTED:assignment]"),
    ("kwarg-literal", 'connect(user="bob", password="hunter2")', 'connect(user="bob", password="[REDACTED:assignment]")'),
    ("token-mixed-case", "token: aBcD3fGh", "token: [REDACTED:assignment]"),
    (
        "json-escaped-env",
        '"stdout": "DEBUG=1\\nSTRIPE_KEY=abc123\\nPWD=/srv\\n"',
        '"stdout": "DEBUG=1\\nSTRIPE_KEY=[REDACTED:assignment]\\nPWD=/srv\\n"',
    ),
    # --- a type annotation between the name and its `=` ---
    ("typescript-typed", 'const apiKey: string = "abc123def456";', 'const apiKey: string = "[REDACTED:assignment]";'),
    ("kotlin-typed", 'val password: String = "hunter2"', 'val password: String = "[REDACTED:assignment]"'),
    ("python-typed", '    api_key: str = "abc123def456"', '    api_key: str = "[REDACTED:assignment]"'),
    ("rust-typed", 'const API_TOKEN: &str = "abc123def456";', 'const API_TOKEN: &str = "[REDACTED:assignment]";'),
    # --- Ruby symbols, SQL national strings, MongoDB's pwd ---
    ("ruby-hash-rocket", "{ :password => 'hunter2' }", "{ :password => '[REDACTED:assignment]' }"),
    ("gem-credentials", "---\n:rubygems_api_key: 4f5e6d7c8b9a0f1e", "---\n:rubygems_api_key: [REDACTED:assignment]"),
    ("sql-national-string", "CREATE LOGIN bob WITH PASSWORD = N'hunter2';", "CREATE LOGIN bob WITH PASSWORD = N'[REDACTED:assignment]';"),
    (
        "mongo-create-user",
        'db.createUser({user: "bob", pwd: "hunter2", roles: ["readWrite"]})',
        'db.createUser({user: "bob", pwd: "[REDACTED:assignment]", roles: ["readWrite"]})',
    ),
    # --- SQL that sets a password ---
    ("sql-create-user", "CREATE USER app WITH PASSWORD 'hunter2';", "CREATE USER app WITH PASSWORD '[REDACTED:sql-password]';"),
    ("sql-alter-role-lower", "alter role app login encrypted password 'hunter2';", "alter role app login encrypted password '[REDACTED:sql-password]';"),
    (
        "sql-identified-by",
        "CREATE USER 'bob'@'%' IDENTIFIED BY 'hunter2';\nALTER USER 'root'@'localhost' IDENTIFIED WITH mysql_native_password BY 'hunter2';",
        "CREATE USER 'bob'@'%' IDENTIFIED BY '[REDACTED:sql-password]';\n"
        "ALTER USER 'root'@'localhost' IDENTIFIED WITH mysql_native_password BY '[REDACTED:sql-password]';",
    ),
    ("sql-oracle-bare", "CREATE USER scott IDENTIFIED BY tiger;", "CREATE USER scott IDENTIFIED BY [REDACTED:sql-password];"),
    (
        "sql-in-psql-command",
        "psql -U postgres -c \"ALTER USER postgres PASSWORD 'it''s9'\"",
        "psql -U postgres -c \"ALTER USER postgres PASSWORD '[REDACTED:sql-password]'\"",
    ),
    # --- Kubernetes Secrets: every value under data/stringData, whatever its key ---
    (
        "k8s-secret-kubectl-yaml",
        "apiVersion: v1\ndata:\n  DATABASE_URL: cG9zdGdyZXM6Ly9ib2I6aHVudGVyMkBkYi9hcHA=\n  username: Ym9i\nkind: Secret\n"
        "metadata:\n  name: db\ntype: Opaque\n",
        "apiVersion: v1\ndata:\n  DATABASE_URL: [REDACTED:kubernetes-secret]\n  username: [REDACTED:kubernetes-secret]\nkind: Secret\n"
        "metadata:\n  name: db\ntype: Opaque\n",
    ),
    (
        "k8s-secret-manifest-string-data",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ntype: Opaque\nstringData:\n  SMTP_LOGIN: bob@x.org:hunter2\n"
        "  settings.ini: |\n    [smtp]\n    user = bob\n  region: eu\n",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ntype: Opaque\nstringData:\n  SMTP_LOGIN: [REDACTED:kubernetes-secret]\n"
        "  settings.ini: |\n    [REDACTED:kubernetes-secret]\n  region: [REDACTED:kubernetes-secret]\n",
    ),
    # --- signed URLs ---
    (
        "s3-presigned-url",
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature=" + fake(64, HEX),
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature=[REDACTED:url-signature]",
    ),
    (
        "gcs-signed-url",
        "https://storage.googleapis.com/b/o?X-Goog-Date=20240101T000000Z&X-Goog-Signature=" + fake(64, HEX) + "\n"
        "https://d1.cloudfront.net/v.mp4?Expires=1700000000&Signature=" + fake(40) + "~&Key-Pair-Id=K2ABC",
        "https://storage.googleapis.com/b/o?X-Goog-Date=20240101T000000Z&X-Goog-Signature=[REDACTED:url-signature]\n"
        "https://d1.cloudfront.net/v.mp4?Expires=1700000000&Signature=[REDACTED:url-signature]&Key-Pair-Id=K2ABC",
    ),
    # --- command-line flags ---
    ("cli-password", "mysql --password hunter2 -u root", "mysql --password [REDACTED:cli-flag] -u root"),
    ("cli-token-quoted", 'tool --auth-token "abc 123"', 'tool --auth-token "[REDACTED:cli-flag]"'),
    ("cli-api-key", "client --api-key abc123 --verbose", "client --api-key [REDACTED:cli-flag] --verbose"),
    # --- the same flags as argv lists in code: each word a quoted item ---
    (
        "argv-sshpass",
        'subprocess.run(["sshpass", "-p", "hunter2", "ssh", "host"])',
        'subprocess.run(["sshpass", "-p", "[REDACTED:cli-flag]", "ssh", "host"])',
    ),
    (
        "argv-mysql-glued",
        'subprocess.run(["mysql", "-u", "root", "-phunter2", "db"])',
        'subprocess.run(["mysql", "-u", "root", "-p[REDACTED:cli-flag]", "db"])',
    ),
    ("argv-go", 'cmd := exec.Command("redis-cli", "-a", "hunter2", "ping")', 'cmd := exec.Command("redis-cli", "-a", "[REDACTED:cli-flag]", "ping")'),
    ("argv-node-long-flag", "spawn('psql', ['--password', 'hunter2'])", "spawn('psql', ['--password', '[REDACTED:cli-flag]'])"),
    (
        "argv-node-program-before-list",
        "execFile('mysql', ['-u', user, '-phunter2'])",
        "execFile('mysql', ['-u', user, '-p[REDACTED:cli-flag]'])",
    ),
    (
        "argv-one-item-a-line",
        'cmd = [\n    "sshpass",\n    "-p",\n    "hunter2",\n    "ssh",\n]',
        'cmd = [\n    "sshpass",\n    "-p",\n    "[REDACTED:cli-flag]",\n    "ssh",\n]',
    ),
    (
        "argv-subcommand",
        'run(["docker", "login", "-u", "bob", "-p", "hunter2", registry])',
        'run(["docker", "login", "-u", "bob", "-p", "[REDACTED:cli-flag]", registry])',
    ),
    ("argv-curl-user", 'subprocess.run(["curl", "-u", "bob:s3cret", url])', 'subprocess.run(["curl", "-u", "bob:[REDACTED:cli-flag]", url])'),
    ("argv-keytool", 'cmd = ["keytool", "-storepass", "hunter2"]', 'cmd = ["keytool", "-storepass", "[REDACTED:cli-flag]"]'),
    (
        "argv-redis-server",
        'command: ["redis-server", "--requirepass", "hunter2"]\ncommand: redis-server --requirepass hunter2',
        'command: ["redis-server", "--requirepass", "[REDACTED:cli-flag]"]\ncommand: redis-server --requirepass [REDACTED:cli-flag]',
    ),
    # --- passwords as a program's positional argument ---
    ("htpasswd-b", "htpasswd -b /etc/nginx/.htpasswd admin hunter2", "htpasswd -b /etc/nginx/.htpasswd admin [REDACTED:cli-flag]"),
    ("htpasswd-bc-cost", "sudo htpasswd -bcB -C 12 .htpasswd admin 'pw 9!'", "sudo htpasswd -bcB -C 12 .htpasswd admin '[REDACTED:cli-flag]'"),
    ("htpasswd-nb", "htpasswd -nb admin hunter2 >> users", "htpasswd -nb admin [REDACTED:cli-flag] >> users"),
    ("sqlplus", "sqlplus scott/tiger@orcl @run.sql\nsqlplus -s system/hunter2", "sqlplus scott/[REDACTED:cli-flag]@orcl @run.sql\nsqlplus -s system/[REDACTED:cli-flag]"),
    ("net-use", "net use Z: \\\\srv\\share hunter2 /user:CORP\\bob", "net use Z: \\\\srv\\share [REDACTED:cli-flag] /user:CORP\\bob"),
    # ... after a subcommand (one table: program, subcommand, which word after it)
    ("cargo-login", "cargo login cio1234567890abcdefABCDEF", "cargo login [REDACTED:cli-flag]"),
    ("cargo-login-registry", "cargo +nightly login --registry my-reg cio98765abc", "cargo +nightly login --registry my-reg [REDACTED:cli-flag]"),
    ("vault-login-legacy", "vault login s.Abc123def456GHI789jkl", "vault login [REDACTED:cli-flag]"),
    ("vault-login-switch", "vault login -no-print s.Abc123def456GHI789jkl", "vault login -no-print [REDACTED:cli-flag]"),
    ("bw-unlock", "bw unlock hunter2pass\nbw unlock --raw 'my pw'", "bw unlock [REDACTED:cli-flag]\nbw unlock --raw '[REDACTED:cli-flag]'"),
    ("bw-login", "bw login bob@example.com hunter2", "bw login bob@example.com [REDACTED:cli-flag]"),
    ("rabbitmqctl-add-user", "rabbitmqctl add_user admin hunter2", "rabbitmqctl add_user admin [REDACTED:cli-flag]"),
    (
        "rabbitmqctl-change-password",
        "docker exec rmq rabbitmqctl -n rabbit@h change_password admin 's3 cr3t' && rabbitmqctl set_user_tags admin administrator",
        "docker exec rmq rabbitmqctl -n rabbit@h change_password admin '[REDACTED:cli-flag]' && rabbitmqctl set_user_tags admin administrator",
    ),
    ("poetry-http-basic", "poetry config http-basic.myrepo alice hunter2", "poetry config http-basic.myrepo alice [REDACTED:cli-flag]"),
    ("poetry-pypi-token", "poetry config --local pypi-token.testpypi abc123def456", "poetry config --local pypi-token.testpypi [REDACTED:cli-flag]"),
    (
        "nmcli-wifi-connect",
        'nmcli device wifi connect MyNet password "my wifi pw" ifname wlan0',
        'nmcli device wifi connect MyNet password "[REDACTED:cli-flag]" ifname wlan0',
    ),
    (
        "nmcli-psk",
        "nmcli con modify home wifi-sec.psk hunter2\nnmcli c add type wifi 802-11-wireless-security.psk hunter2",
        "nmcli con modify home wifi-sec.psk [REDACTED:cli-flag]\nnmcli c add type wifi 802-11-wireless-security.psk [REDACTED:cli-flag]",
    ),
    ("mc-alias-set", "mc alias set local http://localhost:9000 minioadmin s3cr3tKey99", "mc alias set local http://localhost:9000 minioadmin [REDACTED:cli-flag]"),
    ("positional-in-json", '{"command": "bw unlock hunter2", "description": "Unlock"}', '{"command": "bw unlock [REDACTED:cli-flag]", "description": "Unlock"}'),
    ("heroku-config-set", "heroku config:set API_KEY=abc123def456ghi789 -a app", "heroku config:set API_KEY=[REDACTED:assignment] -a app"),
    # pulumi's --secret is a switch: the value goes, the name stays, whatever it is called
    ("pulumi-secret-flag-first", "pulumi config set --secret myThing abc123 -s dev", "pulumi config set --secret myThing [REDACTED:cli-flag] -s dev"),
    ("pulumi-secret-flag-last", "pulumi --cwd infra config set myThing abc123 --secret", "pulumi --cwd infra config set myThing [REDACTED:cli-flag] --secret"),
    ("pulumi-secret-name", "pulumi config set --secret dbPassword hunter2", "pulumi config set --secret dbPassword [REDACTED:assignment]"),
    # --- AUTH commands: Redis at its prompt or in a script, SMTP SASL transcripts ---
    ("redis-auth-prompt", "127.0.0.1:6379> AUTH hunter2\nOK", "127.0.0.1:6379> AUTH [REDACTED:redis-password]\nOK"),
    ("redis-auth-user", "127.0.0.1:6379> AUTH default hunter2", "127.0.0.1:6379> AUTH default [REDACTED:redis-password]"),
    ("redis-auth-lower", "localhost:6379[2]> auth hunter2", "localhost:6379[2]> auth [REDACTED:redis-password]"),
    (
        "redis-auth-script",
        'send "AUTH hunter2\\r"\nredis-cli -h cache AUTH hunter2',
        'send "AUTH [REDACTED:redis-password]\\r"\nredis-cli -h cache AUTH [REDACTED:redis-password]',
    ),
    ("smtp-auth-plain", "AUTH PLAIN AGFsaWNlAGh1bnRlcjI=\n235 2.7.0 Authentication successful", "AUTH PLAIN [REDACTED:sasl-credentials]\n235 2.7.0 Authentication successful"),
    ("smtplib-auth-plain", "send: 'AUTH PLAIN AGFsaWNlAGh1bnRlcjI=\\r\\n'", "send: 'AUTH PLAIN [REDACTED:sasl-credentials]\\r\\n'"),
    (
        "smtp-auth-login",
        "AUTH LOGIN\n334 VXNlcm5hbWU6\nYWxpY2U=\n334 UGFzc3dvcmQ6\naHVudGVyMg==\n235 2.7.0 Accepted",
        "AUTH LOGIN\n334 VXNlcm5hbWU6\nYWxpY2U=\n334 UGFzc3dvcmQ6\n[REDACTED:sasl-credentials]\n235 2.7.0 Accepted",
    ),
    ("smtp-auth-plain-prompted", "AUTH PLAIN\n334 \nAGFsaWNlAGh1bnRlcjI=\n235 ok", "AUTH PLAIN\n334 \n[REDACTED:sasl-credentials]\n235 ok"),
    # --- passwords fed to a program's stdin, PowerShell's plain-text SecureString ---
    (
        "here-string-password-stdin",
        "docker login -u bob --password-stdin <<< 'hunter2' && vercel env add API_TOKEN production <<< abc123def",
        "docker login -u bob --password-stdin <<< '[REDACTED:cli-flag]' && vercel env add API_TOKEN production <<< [REDACTED:cli-flag]",
    ),
    (
        "heredoc-password-stdin",
        "docker login registry.io -u bob --password-stdin <<EOF\nhunter2\nEOF",
        "docker login registry.io -u bob --password-stdin <<EOF\n[REDACTED:cli-flag]\nEOF",
    ),
    (
        "piped-to-secret-setters",
        "printf 'abc123def' | gh secret set API_TOKEN\necho hunter2 | wrangler secret put DB_PASSWORD\n"
        "echo hunter2 | gpg --batch --passphrase-fd 0 -d backup.gpg",
        "printf '[REDACTED:cli-flag]' | gh secret set API_TOKEN\necho [REDACTED:cli-flag] | wrangler secret put DB_PASSWORD\n"
        "echo [REDACTED:cli-flag] | gpg --batch --passphrase-fd 0 -d backup.gpg",
    ),
    (
        "powershell-securestring",
        "$pw = ConvertTo-SecureString 'hunter2' -AsPlainText -Force\n$s = ConvertTo-SecureString -String \"hunter2\" -AsPlainText",
        "$pw = ConvertTo-SecureString '[REDACTED:cli-flag]' -AsPlainText -Force\n$s = ConvertTo-SecureString -String \"[REDACTED:cli-flag]\" -AsPlainText",
    ),
    (
        "powershell-password-flags",
        "nuget sources add -Name feed -Source https://x -Username bob -Password hunter2\nnuget push a.nupkg -ApiKey abc123def",
        "nuget sources add -Name feed -Source https://x -Username bob -Password [REDACTED:cli-flag]\nnuget push a.nupkg -ApiKey [REDACTED:cli-flag]",
    ),
    (
        "remote-login-flags",
        "evil-winrm -i 10.0.0.5 -u bob -p hunter2\nplink -ssh bob@host -pw hunter2\nxfreerdp /v:host /u:bob /p:hunter2\n"
        "twine upload -u __token__ -p abc123def dist/*\ndotnet nuget add source https://x -n f -u bob -p hunter2\n"
        "gh secret set API_TOKEN -b'abc123def'",
        "evil-winrm -i 10.0.0.5 -u bob -p [REDACTED:cli-flag]\nplink -ssh bob@host -pw [REDACTED:cli-flag]\nxfreerdp /v:host /u:bob /p:[REDACTED:cli-flag]\n"
        "twine upload -u __token__ -p [REDACTED:cli-flag] dist/*\ndotnet nuget add source https://x -n f -u bob -p [REDACTED:cli-flag]\n"
        "gh secret set API_TOKEN -b'[REDACTED:cli-flag]'",
    ),
    (
        "url-scheme-before-query-secret",  # `otpauth:` is a scheme, not a name and its value covering the `secret=` after it
        'otpauth://totp/ACME:bob@x.io?secret=' + fake(32, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") + "&issuer=ACME\nxauth://h/x?token=Zq8vLm2pXwQ4rT7yU1iO&a=1",
        "otpauth://totp/ACME:bob@x.io?secret=[REDACTED:assignment]&issuer=ACME\nxauth://h/x?token=[REDACTED:assignment]&a=1",
    ),
    (
        "netrc-default-entry",  # the entry for every other host, opening its line
        f"machine a.org login a password {PW}\ndefault login anonymous password {PW}\ndefault\n  login bob\n  password {PW}\n",
        "machine a.org login a password [REDACTED:netrc-password]\ndefault login anonymous password [REDACTED:netrc-password]\n"
        "default\n  login bob\n  password [REDACTED:netrc-password]\n",
    ),
    (
        "prose-private-key-label",  # `wg show`'s and key tools' `private key: <base64>`
        "interface: wg0\n  public key: " + fake(43) + "=\n  private key: " + fake(43) + "=\nPrivate Key: " + fake(43) + "=",
        "interface: wg0\n  public key: " + fake(43) + "=\n  private key: [REDACTED:prose-secret]\nPrivate Key: [REDACTED:prose-secret]",
    ),
    (
        "netrc-password-before-login",
        "machine api.heroku.com\n  password hunter2\n  login bob@x.org\n",
        "machine api.heroku.com\n  password [REDACTED:netrc-password]\n  login bob@x.org\n",
    ),
    ("ecr-login-password", "$ aws ecr get-login-password\neyJwYXlsb2FkIjoi" + fake(60) + "==", "$ aws ecr get-login-password\n[REDACTED:aws-ecr-token]"),
    ("doppler-named-config", "DOPPLER_TOKEN=dp" + ".st.dev." + fake(43), "DOPPLER_TOKEN=[REDACTED:doppler-token]"),
    (
        "openvpn-static-key",
        "<tls-auth>\n-----BEGIN OpenVPN Static key V1-----\n" + "\n".join([fake(32, HEX)] * 4) + "\n-----END OpenVPN Static key V1-----\n</tls-auth>",
        "<tls-auth>\n-----BEGIN OpenVPN Static key V1-----\n[REDACTED:private-key]\n-----END OpenVPN Static key V1-----\n</tls-auth>",
    ),
    # --- password hashes (crypt form): the scheme stays ---
    (
        "htpasswd-file",
        "$ cat .htpasswd\nbob:$apr1$r31.ab.x$" + fake(22) + "\nalice:$2y$05$" + fake(53),
        "$ cat .htpasswd\nbob:$apr1$[REDACTED:password-hash]\nalice:$2y$05$[REDACTED:password-hash]",
    ),
    (
        "shadow-line",
        "root:$6$saltsalt$" + fake(86) + ":19000:0:99999:7:::",
        "root:$6$[REDACTED:password-hash]:19000:0:99999:7:::",
    ),
    (
        "ansible-user-password-hash",
        '    password: "$6$rounds=656000$saltsalt$' + fake(86) + '"\nuseradd -m -p \'$6$salt$' + fake(43) + "' bob",
        '    password: "$6$rounds=656000$[REDACTED:password-hash]"\nuseradd -m -p \'$6$[REDACTED:password-hash]\' bob',
    ),
    (
        "argon2-hash",
        "ADMIN_PASSWORD_HASH='$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$" + fake(43) + "'",
        "ADMIN_PASSWORD_HASH='$argon2id$[REDACTED:password-hash]'",
    ),
    # --- cookies: the values go, the names and Set-Cookie's attributes stay ---
    (
        "cookie-curl-verbose",
        "> GET / HTTP/1.1\n> Host: x\n> Cookie: session=abc123def456; csrftoken=Xy9kLm2Pq\n>",
        "> GET / HTTP/1.1\n> Host: x\n> Cookie: session=[REDACTED:cookie]; csrftoken=[REDACTED:cookie]\n>",
    ),
    (
        "set-cookie-attributes",
        "< Set-Cookie: sessionid=8f7a6b5c4d3e2f1a; Path=/; HttpOnly; Secure; SameSite=Lax; Expires=Wed, 21 Oct 2026 07:28:00 GMT\n< Vary: *",
        "< Set-Cookie: sessionid=[REDACTED:cookie]; Path=/; HttpOnly; Secure; SameSite=Lax; Expires=Wed, 21 Oct 2026 07:28:00 GMT\n< Vary: *",
    ),
    (
        "cookie-header-flag",
        'curl -H "Cookie: session=eyJhbGciOi123abc; theme=dark" https://x',
        'curl -H "Cookie: session=[REDACTED:cookie]; theme=[REDACTED:cookie]" https://x',
    ),
    ("cookie-dict", 'headers = {"Cookie": "sid=s%3Aabc123.def456"}', 'headers = {"Cookie": "sid=[REDACTED:cookie]"}'),
    (
        "set-cookie-json-escaped",
        '{"stdout": "< set-cookie: sid=abc123; path=/\\n< x: y"}',
        '{"stdout": "< set-cookie: sid=[REDACTED:cookie]; path=/\\n< x: y"}',
    ),
    (
        "curl-cookie-flag",
        "curl -b 'sid=abc123; lang=en' https://x && curl --cookie \"sid=abc123\" https://x",
        "curl -b 'sid=[REDACTED:cookie]; lang=[REDACTED:cookie]' https://x && curl --cookie \"sid=[REDACTED:cookie]\" https://x",
    ),
    (
        "cookie-quoted-values",
        '> Cookie: sid="abc123def456"; theme=dark\n< Set-Cookie: token="Xy9kLm2Pq7"; Path=/; HttpOnly',
        '> Cookie: sid="[REDACTED:cookie]"; theme=[REDACTED:cookie]\n< Set-Cookie: token="[REDACTED:cookie]"; Path=/; HttpOnly',
    ),
    (
        "cookie-map-in-code",
        "requests.get(url, cookies={'sessionid': 'a8Fj29Kd0sLq83nXz7Pw', 'lang': 'en'})\n"
        "requests.get(url, cookies=dict(sid='a8Fj29Kd0sLq83nXz7Pw'))\nconst jar = { cookies: { sid: \"a8Fj29Kd0sLq83nXz7Pw\" } }\n"
        "self.client.cookies = {\n    'sessionid': 'a8Fj29Kd0sLq83nXz7Pw',\n}\nx = {'a': 'b1c2'}",
        "requests.get(url, cookies={'sessionid': '[REDACTED:cookie]', 'lang': '[REDACTED:cookie]'})\n"
        "requests.get(url, cookies=dict(sid='[REDACTED:cookie]'))\nconst jar = { cookies: { sid: \"[REDACTED:cookie]\" } }\n"
        "self.client.cookies = {\n    'sessionid': '[REDACTED:cookie]',\n}\nx = {'a': 'b1c2'}",
    ),
    (
        "cookie-map-json-escaped",
        '{"cookies": {"sid": "a8Fj29Kd0sLq83nXz7Pw"}}\n{"stdout": "{\\"cookies\\": {\\"sid\\": \\"abc123\\"}}"}',
        '{"cookies": {"sid": "[REDACTED:cookie]"}}\n{"stdout": "{\\"cookies\\": {\\"sid\\": \\"[REDACTED:cookie]\\"}}"}',
    ),
    (
        "har-cookie-header",
        '{"headers": [{"name": "Cookie", "value": "sid=abc123def456"}, {"name": "Accept", "value": "text/html"}]}',
        '{"headers": [{"name": "Cookie", "value": "sid=[REDACTED:cookie]"}, {"name": "Accept", "value": "text/html"}]}',
    ),
    (
        "har-authorization-header",
        '{"name": "Authorization", "value": "Basic dXNlcjpodW50ZXIy"}',
        '{"name": "Authorization", "value": "Basic [REDACTED:authorization]"}',
    ),
    # --- HTML forms and XML config ---
    ("html-password-input", '<input type="password" name="pw" value="hunter2">', '<input type="password" name="pw" value="[REDACTED:assignment]">'),
    ("html-password-input-any-order", "<input value=hunter2 TYPE=Password name=pw>", "<input value=[REDACTED:assignment] TYPE=Password name=pw>"),
    ("html-password-input-upper-case", '<INPUT TYPE="PASSWORD" NAME="pw" VALUE="hunter2">', '<INPUT TYPE="PASSWORD" NAME="pw" VALUE="[REDACTED:assignment]">'),
    (
        "xml-element-with-attributes",
        '<server><id>nexus</id><password encrypted="false">hunter2</password></server>',
        '<server><id>nexus</id><password encrypted="false">[REDACTED:assignment]</password></server>',
    ),
    (
        "maven-settings-server",
        "<server>\n  <id>nexus</id>\n  <username>deploy</username>\n  <password>hunter2</password>\n</server>",
        "<server>\n  <id>nexus</id>\n  <username>deploy</username>\n  <password>[REDACTED:assignment]</password>\n</server>",
    ),
    (
        "tomcat-users",
        '<user username="admin" password="hunter2" roles="manager-gui"/>',
        '<user username="admin" password="[REDACTED:assignment]" roles="manager-gui"/>',
    ),
    (
        "name-value-exact-name",
        '<property name="password" value="hunter2"/>\n{"name": "password", "value": "hunter2"}\n- name: PASSWORD\n  value: hunter2',
        '<property name="password" value="[REDACTED:assignment]"/>\n{"name": "password", "value": "[REDACTED:assignment]"}\n'
        "- name: PASSWORD\n  value: [REDACTED:assignment]",
    ),
    # --- private keys ---
    (
        "rsa-key-newlines",
        f"$ cat id_rsa\n{RSA_KEY}\n$ ls",
        "$ cat id_rsa\n-----BEGIN RSA PRIVATE KEY-----\n[REDACTED:private-key]\n-----END RSA PRIVATE KEY-----\n$ ls",
    ),
    (
        "rsa-key-json-escaped",
        '{"output": "' + RSA_KEY.replace("\n", "\\n") + '\\n", "exit": 0}',
        '{"output": "-----BEGIN RSA PRIVATE KEY-----\\n[REDACTED:private-key]\\n-----END RSA PRIVATE KEY-----\\n", "exit": 0}',
    ),
    (
        "openssh-key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(KEY_BODY_LINES) + "\n-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n[REDACTED:private-key]\n-----END OPENSSH PRIVATE KEY-----\n",
    ),
    (
        "ec-key-crlf",
        "-----BEGIN EC PRIVATE KEY-----\r\n" + "\r\n".join(KEY_BODY_LINES[:3]) + "\r\n-----END EC PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----\r\n[REDACTED:private-key]\r\n-----END EC PRIVATE KEY-----",
    ),
    (
        "encrypted-pkcs8",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + "\n".join(KEY_BODY_LINES) + "\n-----END ENCRYPTED PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n[REDACTED:private-key]\n-----END ENCRYPTED PRIVATE KEY-----",
    ),
    (
        "rsa-legacy-encrypted",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A1B2C3D4E5F\n\n"
        + "\n".join(KEY_BODY_LINES)
        + "\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----\n[REDACTED:private-key]\n-----END RSA PRIVATE KEY-----",
    ),
    (
        "pgp-key",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n"
        + "\n".join(KEY_BODY_LINES)
        + "\n=aB3d\n-----END PGP PRIVATE KEY BLOCK-----",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n[REDACTED:private-key]\n-----END PGP PRIVATE KEY BLOCK-----",
    ),
    (
        "key-cut-short",
        "head -c 200 key.pem\n-----BEGIN PRIVATE KEY-----\n" + KEY_BODY_LINES[0] + "\n" + KEY_BODY_LINES[1][:30],
        "head -c 200 key.pem\n-----BEGIN PRIVATE KEY-----\n[REDACTED:private-key]",
    ),
    (
        "key-cut-short-json-escaped",
        '{"stdout": "-----BEGIN PRIVATE KEY-----\\n' + KEY_BODY_LINES[0] + "\\n" + KEY_BODY_LINES[1][:30] + '", "n": 1}',
        '{"stdout": "-----BEGIN PRIVATE KEY-----\\n[REDACTED:private-key]", "n": 1}',
    ),
    (
        "key-python-string-concat",
        'KEY = (\n    "-----BEGIN RSA PRIVATE KEY-----\\n"\n    "'
        + KEY_BODY_LINES[0]
        + '\\n"\n    "-----END RSA PRIVATE KEY-----"\n)',
        'KEY = (\n    "-----BEGIN RSA PRIVATE KEY-----\\n"\n    "[REDACTED:private-key]\\n"\n    "-----END RSA PRIVATE KEY-----"\n)',
    ),    # --- mail logins in the clear ---
    (
        "imap-login",
        "openssl s_client -crlf -connect imap.example.com:993\na001 LOGIN alice Tr0ub4dor3xq\r\na001 OK LOGIN completed",
        "openssl s_client -crlf -connect imap.example.com:993\na001 LOGIN alice [REDACTED:mail-password]\r\na001 OK LOGIN completed",
    ),
    ("imap-login-quoted", 'A1 login "alice@example.com" "correct horse"', 'A1 login "alice@example.com" "[REDACTED:mail-password]"'),
    ("pop3-pass", "+OK POP3 ready\nUSER alice\n+OK\nPASS Tr0ub4dor3xq\n+OK logged in", "+OK POP3 ready\nUSER alice\n+OK\nPASS [REDACTED:mail-password]\n+OK logged in"),
    # --- secrets handed to code by position ---
    (
        "smtp-login",
        'server = smtplib.SMTP_SSL("smtp.gmail.com")\nserver.login("me@gmail.com", "abcd efgh ijkl mnop")',
        'server = smtplib.SMTP_SSL("smtp.gmail.com")\nserver.login("me@gmail.com", "[REDACTED:code-literal]")',
    ),
    ("imap-login-code", "M.login(user, 'Tr0ub4dor3xq')", "M.login(user, '[REDACTED:code-literal]')"),
    ("ldap-bind-code", 'conn.simple_bind_s("cn=admin,dc=example,dc=com", "Tr0ub4dor3xq")', 'conn.simple_bind_s("cn=admin,dc=example,dc=com", "[REDACTED:code-literal]")'),
    ("jwt-sign", "const t = jwt.sign({ sub: user.id }, 'k3y-f0r-prod!', { expiresIn: '1h' })", "const t = jwt.sign({ sub: user.id }, '[REDACTED:code-literal]', { expiresIn: '1h' })"),
    ("jwt-encode", 'tok = jwt.encode(payload, "k3y-f0r-prod!", algorithm="HS256")', 'tok = jwt.encode(payload, "[REDACTED:code-literal]", algorithm="HS256")'),
    ("jwt-decode", 'jwt.decode(tok, "k3y-f0r-prod!", algorithms=["HS256"])', 'jwt.decode(tok, "[REDACTED:code-literal]", algorithms=["HS256"])'),
    ("hmac-new", "sig = hmac.new(b'k3y-f0r-prod!', body, hashlib.sha256)", "sig = hmac.new(b'[REDACTED:code-literal]', body, hashlib.sha256)"),
    ("node-hmac", "crypto.createHmac('sha256', 'k3y-f0r-prod!').update(body)", "crypto.createHmac('sha256', '[REDACTED:code-literal]').update(body)"),
    ("go-hmac", 'mac := hmac.New(sha256.New, []byte("k3y-f0r-prod!"))', 'mac := hmac.New(sha256.New, []byte("[REDACTED:code-literal]"))'),
    ("java-key-spec", 'new SecretKeySpec("k3y-f0r-prod!".getBytes(), "HmacSHA256")', 'new SecretKeySpec("[REDACTED:code-literal]".getBytes(), "HmacSHA256")'),
    ("nodemailer-pass", "auth: { user: 'me@x.com', pass: 'Tr0ub4dor3xq' }", "auth: { user: 'me@x.com', pass: '[REDACTED:assignment]' }"),
    # --- configuration ---
    (
        "terraform-default",
        'variable "db_password" {\n  type    = string\n  default = "Tr0ub4dor3xq"\n}',
        'variable "db_password" {\n  type    = string\n  default = "[REDACTED:assignment]"\n}',
    ),
    (
        "terraform-sensitive",
        'variable "admin" {\n  default   = "Tr0ub4dor3xq"\n  sensitive = true\n}',
        'variable "admin" {\n  default   = "[REDACTED:assignment]"\n  sensitive = true\n}',
    ),
    ("ldap-bindpw", "binddn cn=admin,dc=example,dc=com\nbindpw Tr0ub4dor3xq", "binddn cn=admin,dc=example,dc=com\nbindpw [REDACTED:ldap-password]"),
    ("slapd-rootpw", 'rootdn "cn=Manager,dc=example"\nrootpw Tr0ub4dor3xq', 'rootdn "cn=Manager,dc=example"\nrootpw [REDACTED:ldap-password]'),
    ("kickstart-rootpw", "rootpw --plaintext Tr0ub4dor3xq", "rootpw --plaintext [REDACTED:ldap-password]"),
    (
        "ldif-password",
        "dn: uid=alice,ou=people\nuserPassword: {SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nolcRootPW: Tr0ub4dor3xq",
        "dn: uid=alice,ou=people\nuserPassword: {SSHA}[REDACTED:ldap-password]\nolcRootPW: [REDACTED:assignment]",
    ),
    (
        "olcrootpw-hash",
        "replace: olcRootPW\nolcRootPW: {SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nolcRootPW:: e1NTSEF9VzZwaDVNbTVQejhHZw==",
        "replace: olcRootPW\nolcRootPW: {SSHA}[REDACTED:ldap-password]\nolcRootPW:: [REDACTED:ldap-password]",
    ),
    ("slapd-rootpw-hash", "rootpw {SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "rootpw {SSHA}[REDACTED:ldap-password]"),
    (
        "hash-scheme-under-a-name",
        'adminPassword: "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="\nLDAP_ROOT_PW={CRYPT}Tr0ub4dor3xq',
        'adminPassword: "{SSHA}[REDACTED:assignment]"\nLDAP_ROOT_PW={CRYPT}[REDACTED:assignment]',
    ),
    (
        "ldappasswd-slappasswd",
        "ldappasswd -x -D cn=admin,dc=x -w Tr0ub4dor3xq -a 0ld-Passw0rd -s N3w-Passw0rd uid=bob,dc=x\nslappasswd -s Tr0ub4dor3xq",
        "ldappasswd -x -D cn=admin,dc=x -w [REDACTED:cli-flag] -a [REDACTED:cli-flag] -s [REDACTED:cli-flag] uid=bob,dc=x\n"
        "slappasswd -s [REDACTED:cli-flag]",
    ),
    ("pasted-slappasswd-output", "$ slappasswd -s Tr0ub4dor3xq\n{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "$ slappasswd -s [REDACTED:cli-flag]\n[REDACTED:command-output]\n"),
    (
        "ldap3-connection-positional",
        "conn = Connection(server, 'cn=admin,dc=example,dc=org', 'Tr0ub4dor3xq', auto_bind=True)",
        "conn = Connection(server, 'cn=admin,dc=example,dc=org', '[REDACTED:code-literal]', auto_bind=True)",
    ),
    (
        "credential-calls-more",
        "c = pika.PlainCredentials('guest', 'Tr0ub4dor3xq')\ndb = cx_Oracle.connect(\"scott\", \"Tr0ub4dor3xq\", \"db/orcl\")\n"
        "ms = pymssql.connect(\"srv\", \"sa\", \"Tr0ub4dor3xq\", \"db\")",
        "c = pika.PlainCredentials('guest', '[REDACTED:code-literal]')\ndb = cx_Oracle.connect(\"scott\", \"[REDACTED:code-literal]\", \"db/orcl\")\n"
        "ms = pymssql.connect(\"srv\", \"sa\", \"[REDACTED:code-literal]\", \"db\")",
    ),
    (
        "paramiko-connect-positional",
        "client.connect(\"db.example.com\", 22, \"deploy\", \"Tr0ub4dor3xq\")\nssh.connect(host, cfg.port, 'root', 'S3cr3t!pass')",
        "client.connect(\"db.example.com\", 22, \"deploy\", \"[REDACTED:code-literal]\")\nssh.connect(host, cfg.port, 'root', '[REDACTED:code-literal]')",
    ),
    (
        "rclone-config-create",
        "rclone config create mysftp sftp host example.com user bob pass Tr0ub4dor3xq --obscure\n"
        "rclone config update gd client_secret GOCSPXa81f9c2e7b4d scope drive\nrclone config create nc webdav url=https://x pass=Tr0ub4dor3xq",
        "rclone config create mysftp sftp host example.com user bob pass [REDACTED:cli-flag] --obscure\n"
        "rclone config update gd client_secret [REDACTED:cli-flag] scope drive\nrclone config create nc webdav url=https://x pass=[REDACTED:cli-flag]",
    ),
    ("pasted-rclone-obscure", "$ rclone obscure Tr0ub4dor3xq\nq7nnZqm3n2sH1y-H9w4ZX3xKZ3d\n", "$ rclone obscure [REDACTED:cli-flag]\n[REDACTED:command-output]\n"),
    (
        "rclone-conf",
        "[mysftp]\ntype = sftp\nhost = example.com\nuser = bob\npass = q7nnZqm3n2sH1y-H9w4ZX3xKZ3d\n\n[mega]\ntype = mega\npass = hunter",
        "[mysftp]\ntype = sftp\nhost = example.com\nuser = bob\npass = [REDACTED:assignment]\n\n[mega]\ntype = mega\npass = [REDACTED:assignment]",
    ),
    (
        "pasted-powershell-session",
        "PS> Get-Content .\\db_password.txt\nTr0ub4dor3xq\nPS C:\\Users\\me> [Environment]::GetEnvironmentVariable(\"API_TOKEN\")\n"
        "a81f9c2e7b4d6053\nC:\\Users\\me>echo %DB_PASSWORD%\nTr0ub4dor3xq\n",
        "PS> Get-Content .\\db_password.txt\n[REDACTED:command-output]\nPS C:\\Users\\me> [Environment]::GetEnvironmentVariable(\"API_TOKEN\")\n"
        "[REDACTED:command-output]\nC:\\Users\\me>echo %DB_PASSWORD%\n[REDACTED:command-output]\n",
    ),
    (
        "powershell-env-table",
        "Name                           Value\n----                           -----\nDB_PASSWORD                    Tr0ub4dor3xq\nHOME                           C:\\Users\\me",
        "Name                           Value\n----                           -----\nDB_PASSWORD                    [REDACTED:assignment]\nHOME                           C:\\Users\\me",
    ),
    (
        "prose-command-output",
        "I ran op read op://dev/db/password and got Tr0ub4dor3xq, why does login fail?\n"
        "`pass show email/gmail` prints `Tr0ub4dor3xq` but\nvault kv get -field=password secret/db returned:\n  Tr0ub4dor3xq\n"
        "echo $DB_PASSWORD gives me Tr0ub4dor3xq\ngh auth token -> a81f9c2e7b4d6053",
        "I ran op read op://dev/db/password and got [REDACTED:command-output], why does login fail?\n"
        "`pass show email/gmail` prints `[REDACTED:command-output]` but\nvault kv get -field=password secret/db returned:\n  [REDACTED:command-output]\n"
        "echo $DB_PASSWORD gives me [REDACTED:command-output]\ngh auth token -> [REDACTED:command-output]",
    ),
    (
        "suffixed-secret-names",
        "DB_PASSWORD2=Tr0ub4dor3xq\nAPI_KEY_2=a81f9c2e7b4d6053e1\nSECRET_KEY_V2: a81f9c2e7b4d6053e1\n"
        "export DATABASE_PASSWORD_PROD='Tr0ub4dor3xq'\nSTRIPE_SECRET_KEY_TEST=a81f9c2e7b4d6053e1\n"
        "JWT_SECRET_DEV=Tr0ub4dor3xq\npassword1 = 'Tr0ub4dor3xq'\ndbPassword2 = \"Tr0ub4dor3xq\"\n"
        "password_confirmation: Tr0ub4dor3xq\ntoken2: a81f9c2e7b4d6053e1\n- name: DB_PASSWORD_PROD\n  value: Tr0ub4dor3xq",
        "DB_PASSWORD2=[REDACTED:assignment]\nAPI_KEY_2=[REDACTED:assignment]\nSECRET_KEY_V2: [REDACTED:assignment]\n"
        "export DATABASE_PASSWORD_PROD='[REDACTED:assignment]'\nSTRIPE_SECRET_KEY_TEST=[REDACTED:assignment]\n"
        "JWT_SECRET_DEV=[REDACTED:assignment]\npassword1 = '[REDACTED:assignment]'\ndbPassword2 = \"[REDACTED:assignment]\"\n"
        "password_confirmation: [REDACTED:assignment]\ntoken2: [REDACTED:assignment]\n- name: DB_PASSWORD_PROD\n  value: [REDACTED:assignment]",
    ),
    (
        "prose-command-output-aws-kubectl",
        "I ran `aws configure get aws_secret_access_key` and it printed Xk3/9fQ2mZ8pL0aR7tY1uV5wB6nC4dE2gH8jK0lM\n"
        "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d gives me Tr0ub4dor3xq",
        "I ran `aws configure get aws_secret_access_key` and it printed [REDACTED:command-output]\n"
        "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d gives me [REDACTED:command-output]",
    ),
    (
        # Every secret printer, every verb of printing, the command's last word a secret's name or
        # the program's own words (`security ... -s gh -w`: `gh` is an argument there, not a program).
        "prose-command-output-printers-and-verbs",
        "security find-generic-password -s gh -w prints Xk9#mPq2vL\nprintenv DB_PASSWORD outputs Xk9#mPq2vL\n"
        "running `vault read -field=password secret/db` shows Xk9#mPq2vL\nprintenv GITHUB_TOKEN spits out a81f9c2e7b4d6053\n"
        "echo $API_KEY yields a81f9c2e7b4d6053\nsecret-tool lookup service gh says Xk9#mPq2vL\n"
        "keyring get system bob returned Xk9#mPq2vL\nsops -d creds.enc.yaml displays Xk9#mPq2vL\n"
        "gpg --decrypt pw.gpg gave me Xk9#mPq2vL\ncat /run/secrets/db_password printed Xk9#mPq2vL\n"
        "az keyvault secret show --vault-name v --name db --query value -o tsv returns Xk9#mPq2vL\n"
        "openssl rand -hex 16 gave 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c\npwgen -s 16 1 printed Xk9mPq2vLaaa\n"
        "doppler secrets get DB_PASSWORD --plain outputs Xk9#mPq2vL\nheroku config:get DATABASE_PASSWORD, which gives Xk9#mPq2vL\n"
        "terraform output -raw db_password prints Xk9#mPq2vL\npulumi config get dbPassword dumps Xk9#mPq2vL\n"
        "the output of `printenv DB_PASSWORD` is Xk9#mPq2vL\n`$env:DB_PASSWORD` shows Xk9#mPq2vL\n"
        "aws ssm get-parameter --name /prod/db --with-decryption returned Xk9#mPq2vL\nrclone reveal x9Yz shows Xk9#mPq2vL",
        "security find-generic-password -s gh -w prints [REDACTED:command-output]\nprintenv DB_PASSWORD outputs [REDACTED:command-output]\n"
        "running `vault read -field=password secret/db` shows [REDACTED:command-output]\nprintenv GITHUB_TOKEN spits out [REDACTED:command-output]\n"
        "echo $API_KEY yields [REDACTED:command-output]\nsecret-tool lookup service gh says [REDACTED:command-output]\n"
        "keyring get system bob returned [REDACTED:command-output]\nsops -d creds.enc.yaml displays [REDACTED:command-output]\n"
        "gpg --decrypt pw.gpg gave me [REDACTED:command-output]\ncat /run/secrets/db_password printed [REDACTED:command-output]\n"
        "az keyvault secret show --vault-name v --name db --query value -o tsv returns [REDACTED:command-output]\n"
        "openssl rand -hex 16 gave [REDACTED:command-output]\npwgen -s 16 1 printed [REDACTED:command-output]\n"
        "doppler secrets get DB_PASSWORD --plain outputs [REDACTED:command-output]\nheroku config:get DATABASE_PASSWORD, which gives [REDACTED:command-output]\n"
        "terraform output -raw db_password prints [REDACTED:command-output]\npulumi config get dbPassword dumps [REDACTED:command-output]\n"
        "the output of `printenv DB_PASSWORD` is [REDACTED:command-output]\n`$env:DB_PASSWORD` shows [REDACTED:command-output]\n"
        "aws ssm get-parameter --name /prod/db --with-decryption returned [REDACTED:command-output]\nrclone reveal x9Yz shows [REDACTED:command-output]",
    ),
    (
        "go-mysql-dsn",
        'db, err := sql.Open("mysql", "root:Tr0ub4dor3xq@tcp(127.0.0.1:3306)/app")\ndsn := "app:Tr0ub4dor3xq@unix(/run/mysqld.sock)/app"',
        'db, err := sql.Open("mysql", "root:[REDACTED:url-password]@tcp(127.0.0.1:3306)/app")\ndsn := "app:[REDACTED:url-password]@unix(/run/mysqld.sock)/app"',
    ),
    (
        "secret-store-writes",
        "az keyvault secret set --vault-name kv --name db --value Tr0ub4dor3xq\n"
        "aws secretsmanager create-secret --name db --secret-string Tr0ub4dor3xq\nSet-Secret -Name db -Secret \"Tr0ub4dor3xq\"",
        "az keyvault secret set --vault-name kv --name db --value [REDACTED:cli-flag]\n"
        "aws secretsmanager create-secret --name db --secret-string [REDACTED:cli-flag]\nSet-Secret -Name db -Secret \"[REDACTED:cli-flag]\"",
    ),
    (
        "secret-stores-fed-on-stdin",
        "echo -n Tr0ub4dor3xq | gcloud secrets versions add db --data-file=-\npass insert -m db <<< Tr0ub4dor3xq\n"
        "secret-tool store --label=db service db <<< Tr0ub4dor3xq\nkeyring set system bob <<< Tr0ub4dor3xq",
        "echo -n [REDACTED:cli-flag] | gcloud secrets versions add db --data-file=-\npass insert -m db <<< [REDACTED:cli-flag]\n"
        "secret-tool store --label=db service db <<< [REDACTED:cli-flag]\nkeyring set system bob <<< [REDACTED:cli-flag]",
    ),
    ("useradd-hydra", "useradd -m -p Tr0ub4dor3xq bob\nhydra -l admin -p Tr0ub4dor3xq ssh://host", "useradd -m -p [REDACTED:cli-flag] bob\nhydra -l admin -p [REDACTED:cli-flag] ssh://host"),
    ("mysql-password-function", "SET PASSWORD FOR 'bob'@'%' = PASSWORD('Tr0ub4dor3xq');", "SET PASSWORD FOR 'bob'@'%' = PASSWORD('[REDACTED:sql-password]');"),
    (
        "django-set-password",
        "user.set_password('Tr0ub4dor3xq')\nassert user.check_password('Tr0ub4dor3xq')",
        "user.set_password('[REDACTED:assignment]')\nassert user.check_password('[REDACTED:assignment]')",
    ),
    (
        "maven-passphrase",
        "<server><id>x</id><privateKey>~/.ssh/id_rsa</privateKey><passphrase>Tr0ub4dor3xq</passphrase></server>",
        "<server><id>x</id><privateKey>~/.ssh/id_rsa</privateKey><passphrase>[REDACTED:assignment]</passphrase></server>",
    ),
    (
        "msmtprc-password",
        "account default\nhost smtp.example.com\nuser bob\npassword Tr0ub4dor3xq\n",
        "account default\nhost smtp.example.com\nuser bob\npassword [REDACTED:mail-password]\n",
    ),
    (
        "pdf-and-mkpasswd-words",
        "pdftk in.pdf output out.pdf user_pw Tr0ub4dor3xq owner_pw Ow9nerPw2x\nqpdf --encrypt Tr0ub4dor3xq Ow9nerPw2x 256 -- in.pdf out.pdf\n"
        "qpdf --encrypt \"\" Ow9nerPw2x 128 -- a.pdf b.pdf\nmkpasswd -m sha-512 -S saltsalt Tr0ub4dor3xq\nmkpasswd --method=yescrypt hunter2\n"
        "echo Tr0ub4dor3xq | mkpasswd -m sha-512 -s\necho -n Tr0ub4dor3xq | argon2 somesalt -id -t 3",
        "pdftk in.pdf output out.pdf user_pw [REDACTED:cli-flag] owner_pw [REDACTED:cli-flag]\nqpdf --encrypt [REDACTED:cli-flag] [REDACTED:cli-flag] 256 -- in.pdf out.pdf\n"
        "qpdf --encrypt \"\" [REDACTED:cli-flag] 128 -- a.pdf b.pdf\nmkpasswd -m sha-512 -S saltsalt [REDACTED:cli-flag]\nmkpasswd --method=yescrypt [REDACTED:cli-flag]\n"
        "echo [REDACTED:cli-flag] | mkpasswd -m sha-512 -s\necho -n [REDACTED:cli-flag] | argon2 somesalt -id -t 3",
    ),
    (
        # mbsync's Pass (quoted or not, in an IMAPAccount or an old IMAPStore block), a PassCmd or
        # msmtp passwordeval that only echoes a literal, offlineimap's remotepass.
        "mail-sync-passwords",
        "IMAPAccount gmail\nHost imap.gmail.com\nUser me@gmail.com\nPass Tr0ub4dor3xq\nSSLType IMAPS\n\n"
        "IMAPStore old\nHost x\nPass \"hunter2 with space\"\n\nIMAPAccount work\nPassCmd \"echo Tr0ub4dor3xq\"\n\n"
        "passwordeval echo -n Tr0ub4dor3xq\n[Repository remote]\nremoteuser = me\nremotepass = Tr0ub4dor3xq",
        "IMAPAccount gmail\nHost imap.gmail.com\nUser me@gmail.com\nPass [REDACTED:mail-password]\nSSLType IMAPS\n\n"
        "IMAPStore old\nHost x\nPass \"[REDACTED:mail-password]\"\n\nIMAPAccount work\nPassCmd \"echo [REDACTED:mail-password]\"\n\n"
        "passwordeval echo -n [REDACTED:mail-password]\n[Repository remote]\nremoteuser = me\nremotepass = [REDACTED:assignment]",
    ),
    (
        "prose-owned-password",
        "my password Tr0ub4dor3xq doesn't work\nthe password abc123! is rejected",
        "my password [REDACTED:prose-secret] doesn't work\nthe password [REDACTED:prose-secret] is rejected",
    ),
    ("pasted-terraform-output", "$ terraform output db_password\n\"Tr0ub4dor3xq\"\n", "$ terraform output db_password\n[REDACTED:command-output]\n"),
    (
        "auth-pair-builders",
        'es = Elasticsearch(hosts, basic_auth=("elastic", "Tr0ub4dor3xq"))\n.basicAuth("bob", "Tr0ub4dor3xq")\n'
        "request.auth('bob', 'Tr0ub4dor3xq')\n.basic_auth(\"bob\", Some(\"Tr0ub4dor3xq\"))",
        'es = Elasticsearch(hosts, basic_auth=("elastic", "[REDACTED:auth-pair]"))\n.basicAuth("bob", "[REDACTED:auth-pair]")\n'
        "request.auth('bob', '[REDACTED:auth-pair]')\n.basic_auth(\"bob\", Some(\"[REDACTED:auth-pair]\"))",
    ),
    (
        "redis-auth-and-go-ssh-password",
        "$redis->auth('Tr0ub4dor3xq');\njedis.auth(\"Tr0ub4dor3xq\");\nAuth: []ssh.AuthMethod{ssh.Password(\"Tr0ub4dor3xq\")}",
        "$redis->auth('[REDACTED:assignment]');\njedis.auth(\"[REDACTED:assignment]\");\nAuth: []ssh.AuthMethod{ssh.Password(\"[REDACTED:assignment]\")}",
    ),
    (
        "positional-calls-more",
        "new Sequelize('db', 'app', 'Tr0ub4dor3xq', {dialect: 'mysql'})\nNet::FTP.new('host', 'bob', 'Tr0ub4dor3xq')\n"
        'auth := smtp.PlainAuth("", "bob@x.com", "Tr0ub4dor3xq", "smtp.x.com")\ns, err := t.SignedString([]byte("Tr0ub4dor3xq"))',
        "new Sequelize('db', 'app', '[REDACTED:code-literal]', {dialect: 'mysql'})\nNet::FTP.new('host', 'bob', '[REDACTED:code-literal]')\n"
        'auth := smtp.PlainAuth("", "bob@x.com", "[REDACTED:code-literal]", "smtp.x.com")\ns, err := t.SignedString([]byte("[REDACTED:code-literal]"))',
    ),
    (
        "encoded-credentials",
        "headers: {Authorization: 'Basic ' + btoa('bob:Tr0ub4dor3xq')}\nbase64.b64encode(b\"bob:Tr0ub4dor3xq\")\n"
        'curl_setopt($ch, CURLOPT_USERPWD, "bob:Tr0ub4dor3xq");',
        "headers: {Authorization: 'Basic ' + btoa('bob:[REDACTED:authorization]')}\nbase64.b64encode(b\"bob:[REDACTED:authorization]\")\n"
        'curl_setopt($ch, CURLOPT_USERPWD, "bob:[REDACTED:authorization]");',
    ),
    (
        "ansible-password-hash",
        "password: \"{{ 'Tr0ub4dor3xq' | password_hash('sha512') }}\"\npasscode: Tr0ub4dor3xq",
        "password: \"{{ '[REDACTED:assignment]' | password_hash('sha512') }}\"\npasscode: [REDACTED:assignment]",
    ),
    (
        "bare-command-output",
        "I ran:\nop read op://dev/db/password\nTr0ub4dor3xq\nwhy does login fail?",
        "I ran:\nop read op://dev/db/password\n[REDACTED:command-output]\nwhy does login fail?",
    ),
    (
        "password-hashing-inputs",
        'bcrypt.hashpw("Tr0ub4dor3xq".encode(), bcrypt.gensalt())\nawait bcrypt.compare(\'Tr0ub4dor3xq\', hash)\n'
        "u.password = make_password('Tr0ub4dor3xq')\nh = generate_password_hash('Tr0ub4dor3xq')\nopenssl passwd -6 -salt abc Tr0ub4dor3xq",
        'bcrypt.hashpw("[REDACTED:code-literal]".encode(), bcrypt.gensalt())\nawait bcrypt.compare(\'[REDACTED:code-literal]\', hash)\n'
        "u.password = make_password('[REDACTED:code-literal]')\nh = generate_password_hash('[REDACTED:code-literal]')\n"
        "openssl passwd -6 -salt abc [REDACTED:cli-flag]",
    ),
    (
        # Password hashing, checking and key derivation handed the password as a literal, in the
        # libraries' own words; and a cipher's key.
        "password-hashing-more-libraries",
        'h = await argon2.hash("Tr0ub4dor3xq")\nok = await argon2.verify(stored, "Tr0ub4dor3xq")\n'
        'h = PasswordHasher().hash("Tr0ub4dor3xq")\nph.verify(h, "Tr0ub4dor3xq")\nh = pbkdf2_sha256.using(rounds=9).hash("Tr0ub4dor3xq")\n'
        'sha512_crypt.verify("Tr0ub4dor3xq", h)\nString h = BCrypt.hashpw("Tr0ub4dor3xq", BCrypt.gensalt());\n'
        "BCrypt::Password.create('Tr0ub4dor3xq')\n"
        'h, _ := bcrypt.GenerateFromPassword([]byte("Tr0ub4dor3xq"), 10)\nerr := bcrypt.CompareHashAndPassword(h, []byte("Tr0ub4dor3xq"))\n'
        'passwordEncoder.encode("Tr0ub4dor3xq")\nnew BCryptPasswordEncoder().matches("Tr0ub4dor3xq", h)\n'
        "$h = password_hash('Tr0ub4dor3xq', PASSWORD_DEFAULT);\npassword_verify('Tr0ub4dor3xq', $h)\n"
        'dk = hashlib.pbkdf2_hmac("sha256", b"Tr0ub4dor3xq", salt, 100000)\nk = hashlib.scrypt(b"Tr0ub4dor3xq", salt=s, n=2)\n'
        'crypto.pbkdf2Sync("Tr0ub4dor3xq", salt, 1000, 64, "sha512")\ncrypto.scryptSync("Tr0ub4dor3xq", "salt", 64)\n'
        'new Rfc2898DeriveBytes("Tr0ub4dor3xq", salt, 10000)\nKeyDerivation.Pbkdf2("Tr0ub4dor3xq", salt, prf, 1000, 32)\n'
        'f = Fernet(b"Tr0ub4dor3xqTr0ub4dor3xqTr0ub4dor3xq0123456=")\nc = AES.new(b"Tr0ub4dor3xq1234", AES.MODE_GCM)\nAESGCM(b"Tr0ub4dor3xq1234")',
        'h = await argon2.hash("[REDACTED:code-literal]")\nok = await argon2.verify(stored, "[REDACTED:code-literal]")\n'
        'h = PasswordHasher().hash("[REDACTED:code-literal]")\nph.verify(h, "[REDACTED:code-literal]")\n'
        'h = pbkdf2_sha256.using(rounds=9).hash("[REDACTED:code-literal]")\n'
        'sha512_crypt.verify("[REDACTED:code-literal]", h)\nString h = BCrypt.hashpw("[REDACTED:code-literal]", BCrypt.gensalt());\n'
        "BCrypt::Password.create('[REDACTED:code-literal]')\n"
        'h, _ := bcrypt.GenerateFromPassword([]byte("[REDACTED:code-literal]"), 10)\n'
        'err := bcrypt.CompareHashAndPassword(h, []byte("[REDACTED:code-literal]"))\n'
        'passwordEncoder.encode("[REDACTED:code-literal]")\nnew BCryptPasswordEncoder().matches("[REDACTED:code-literal]", h)\n'
        "$h = password_hash('[REDACTED:code-literal]', PASSWORD_DEFAULT);\npassword_verify('[REDACTED:code-literal]', $h)\n"
        'dk = hashlib.pbkdf2_hmac("sha256", b"[REDACTED:code-literal]", salt, 100000)\nk = hashlib.scrypt(b"[REDACTED:code-literal]", salt=s, n=2)\n'
        'crypto.pbkdf2Sync("[REDACTED:code-literal]", salt, 1000, 64, "sha512")\ncrypto.scryptSync("[REDACTED:code-literal]", "salt", 64)\n'
        'new Rfc2898DeriveBytes("[REDACTED:code-literal]", salt, 10000)\nKeyDerivation.Pbkdf2("[REDACTED:code-literal]", salt, prf, 1000, 32)\n'
        'f = Fernet(b"[REDACTED:code-literal]")\nc = AES.new(b"[REDACTED:code-literal]", AES.MODE_GCM)\nAESGCM(b"[REDACTED:code-literal]")',
    ),
    (
        "encoded-credentials-more-languages",
        'base64.StdEncoding.EncodeToString([]byte("bob:Tr0ub4dor3xq"))\nBase64.getEncoder().encodeToString("bob:Tr0ub4dor3xq".getBytes())\n'
        'Convert.ToBase64String(Encoding.UTF8.GetBytes("bob:Tr0ub4dor3xq"))\nBase64.strict_encode64("bob:Tr0ub4dor3xq")\n'
        "base64_encode('bob:Tr0ub4dor3xq')",
        'base64.StdEncoding.EncodeToString([]byte("bob:[REDACTED:authorization]"))\n'
        'Base64.getEncoder().encodeToString("bob:[REDACTED:authorization]".getBytes())\n'
        'Convert.ToBase64String(Encoding.UTF8.GetBytes("bob:[REDACTED:authorization]"))\nBase64.strict_encode64("bob:[REDACTED:authorization]")\n'
        "base64_encode('bob:[REDACTED:authorization]')",
    ),
    (
        # Go's []byte conversion around a key's literal; keys named by what they sign with.
        "go-byte-keys-and-signing-key-names",
        'var jwtKey = []byte("Tr0ub4dor3xq")\njwtSecret := []byte("Tr0ub4dor3xq")\nhmac_key = "Tr0ub4dor3xq"\nAES_KEY=Tr0ub4dor3xq',
        'var jwtKey = []byte("[REDACTED:assignment]")\njwtSecret := []byte("[REDACTED:assignment]")\nhmac_key = "[REDACTED:assignment]"\n'
        "AES_KEY=[REDACTED:assignment]",
    ),
    (
        "wifi-and-mysqladmin-passwords",
        'wpa_passphrase MyNet Tr0ub4dor3xq\nwpa_passphrase "Home Net" "my pass phrase"\nmysqladmin -u root password Tr0ub4dor3xq\n'
        "mysqladmin -uroot -h db password 'new pw here'",
        'wpa_passphrase MyNet [REDACTED:cli-flag]\nwpa_passphrase "Home Net" "[REDACTED:cli-flag]"\nmysqladmin -u root password [REDACTED:cli-flag]\n'
        "mysqladmin -uroot -h db password '[REDACTED:cli-flag]'",
    ),
    (
        "user-and-pass-fields-in-prose",
        "user: admin, pass: swordfish\nusername=bob pw=hunter22\nthe creds are admin/Tr0ub4dor3xq\nCredentials: root / S3cr3t-pass",
        "user: admin, pass: [REDACTED:assignment]\nusername=bob pw=[REDACTED:assignment]\nthe creds are admin/[REDACTED:prose-secret]\n"
        "Credentials: root / [REDACTED:prose-secret]",
    ),
    (
        "more-login-tools",
        "cf login -a api.x -u bob -p Tr0ub4dor3xq\noc login -u admin -p Tr0ub4dor3xq https://api.x:6443\n"
        "mosquitto_passwd -b passwd bob Tr0ub4dor3xq\ncomposer config http-basic.repo.example.com bob Tr0ub4dor3xq\n"
        "composer config --global github-oauth.github.com a81f9c2e7b4d6053aa\ncryptsetup luksOpen /dev/sdb1 x <<< Tr0ub4dor3xq",
        "cf login -a api.x -u bob -p [REDACTED:cli-flag]\noc login -u admin -p [REDACTED:cli-flag] https://api.x:6443\n"
        "mosquitto_passwd -b passwd bob [REDACTED:cli-flag]\ncomposer config http-basic.repo.example.com bob [REDACTED:cli-flag]\n"
        "composer config --global github-oauth.github.com [REDACTED:cli-flag]\ncryptsetup luksOpen /dev/sdb1 x <<< [REDACTED:cli-flag]",
    ),
    ("net-credential", 'var c = new NetworkCredential("bob", "Tr0ub4dor3xq");', 'var c = new NetworkCredential("bob", "[REDACTED:code-literal]");'),
    ("php-pdo", "$db = new PDO($dsn, 'root', 'Tr0ub4dor3xq');", "$db = new PDO($dsn, 'root', '[REDACTED:code-literal]');"),
    ("php-mysqli", "$c = mysqli_connect('localhost', 'root', 'Tr0ub4dor3xq', 'shop');", "$c = mysqli_connect('localhost', 'root', '[REDACTED:code-literal]', 'shop');"),
    ("jdbc-connection", 'DriverManager.getConnection(url, "app", "Tr0ub4dor3xq")', 'DriverManager.getConnection(url, "app", "[REDACTED:code-literal]")'),
    ("java-setter", 'ds.setPassword("Tr0ub4dor3xq");\ncfg.setApiKey("a81f9c2e7b4d6053");', 'ds.setPassword("[REDACTED:assignment]");\ncfg.setApiKey("[REDACTED:assignment]");'),
    ("builder", 'Client.builder().withClientSecret("a81f9c2e7b4d6053").password("Tr0ub4dor3xq").build()', 'Client.builder().withClientSecret("[REDACTED:assignment]").password("[REDACTED:assignment]").build()'),
    (
        "aws-configure-prompts",
        "AWS Secret Access Key [None]: wJalrXUtnFEMIK7MDENGbPxRfiCYz3q9K2mLp0Ab\nDefault region name [None]: eu-west-1",
        "AWS Secret Access Key [None]: [REDACTED:aws-secret-key]\nDefault region name [None]: eu-west-1",
    ),
    (
        "vault-table",
        "Key                   Value\n---                   -----\nsecret_id             3f4a5b6c-1d2e-4f3a-8b9c-0d1e2f3a4b5c\n"
        "secret_id_ttl         0s\npassword              Tr0ub4dor3xq\nusername              app",
        "Key                   Value\n---                   -----\nsecret_id             [REDACTED:assignment]\n"
        "secret_id_ttl         0s\npassword              [REDACTED:assignment]\nusername              app",
    ),
    ("net-user", "net user bob Tr0ub4dor3xqZ9 /add", "net user bob [REDACTED:cli-flag] /add"),
    ("mosquitto", "mosquitto_pub -h broker -u bob -P Tr0ub4dor3xqZ9 -t x -m y", "mosquitto_pub -h broker -u bob -P [REDACTED:cli-flag] -t x -m y"),
    ("lftp", "lftp -u bob,Tr0ub4dor3xqZ9 ftp.example.com", "lftp -u bob,[REDACTED:cli-flag] ftp.example.com"),
    ("curl-oauth2-bearer", "curl --oauth2-bearer Tr0ub4dor3xqZ9 https://api.example.org", "curl --oauth2-bearer [REDACTED:cli-flag] https://api.example.org"),
    ("wmic-password", "wmic /node:srv /user:bob /password:Tr0ub4dor3xqZ9 os get", "wmic /node:srv /user:bob /password:[REDACTED:assignment] os get"),
    ("yaml-block-scalar", "db:\n  password: >-\n    Tr0ub4dor3xqZ9\n  host: x", "db:\n  password: >-\n    [REDACTED:assignment]\n  host: x"),
    ("consul-kv-put", "consul kv put secret/db/password Tr0ub4dor3xqZ9", "consul kv put secret/db/password [REDACTED:assignment]"),
    (
        "ssm-put-parameter",
        "aws ssm put-parameter --name /app/x --value Tr0ub4dor3xqZ9 --type SecureString",
        "aws ssm put-parameter --name /app/x --value [REDACTED:cli-flag] --type SecureString",
    ),
    ("nomad-secret-id", "Accessor ID = 8a1b2c3d-0000-4e5f-9a8b-7c6d5e4f3a2b\nSecret ID   = 3f4a5b6c-1d2e-4f3a-8b9c-0d1e2f3a4b5c", "Accessor ID = 8a1b2c3d-0000-4e5f-9a8b-7c6d5e4f3a2b\nSecret ID   = [REDACTED:assignment]"),
    ("wandb-login", "wandb login 3f4a5b6c1d2e4f3a8b9c0d1e2f3a4b5c6d7e8f90", "wandb login [REDACTED:cli-flag]"),
    ("google-refresh-token", "firebase login:ci\n1//0gAbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_aBcDeFgHiJkLmNoP", "firebase login:ci\n[REDACTED:google-oauth]"),
    ("consul-secret-id", "AccessorID:   8a1b2c3d-0000-4e5f-9a8b-7c6d5e4f3a2b\nSecretID:     3f4a5b6c-1d2e-4f3a-8b9c-0d1e2f3a4b5c", "AccessorID:   8a1b2c3d-0000-4e5f-9a8b-7c6d5e4f3a2b\nSecretID:     [REDACTED:assignment]"),
    ("ngrok-authtoken", "ngrok config add-authtoken 2abcDEFghiJKLmnoPQRstuVWX_3yzABCdefGHIjklMNO", "ngrok config add-authtoken [REDACTED:cli-flag]"),
    ("sshpass-env", "SSHPASS=Tr0ub4dor3xq sshpass -e ssh deploy@host", "SSHPASS=[REDACTED:assignment] sshpass -e ssh deploy@host"),
    ("expect-send", 'spawn ssh bob@host\nexpect "*password:*"\nsend "Tr0ub4dor3xq\\r"', 'spawn ssh bob@host\nexpect "*password:*"\nsend "[REDACTED:expect-password]\\r"'),
    ("prose-password", "the password is Tr0ub4dor&3, please rotate it", "the password is [REDACTED:prose-secret], please rotate it"),
    ("prose-token", "my github token is a81f9c2e7b4d6053.", "my github token is [REDACTED:prose-secret]."),
    ("prose-api-key", "Here is my API key: a81f-9c2e-7b4d", "Here is my API key: [REDACTED:prose-secret]"),
    ("sudo-echo", "[sudo] password for bob: Tr0ub4dor3xq", "[sudo] password for bob: [REDACTED:prose-secret]"),
    (
        # A password stated in prose without a printer: for whom, handed over to use, quoted,
        # or a user/password pair after `login`.
        "prose-password-wordings",
        "password for admin is hunter2x9\nthe password for root: hunter2x9\nuse pw Xk9mPq2vL to log in\n"
        "with password Xk9mPq2vL2 it works\ntry passphrase Xk9#mPq2vL\nthe pw is Xk9mPq2vL\n"
        "the password is \"swordfish\"\nlogin with admin / S3cr3t!pass\nLogin: root/Tr0ub4dor3\nyou can login as bob/Xk9mPq2vL.",
        "password for admin is [REDACTED:prose-secret]\nthe password for root: [REDACTED:prose-secret]\nuse pw [REDACTED:prose-secret] to log in\n"
        "with password [REDACTED:prose-secret] it works\ntry passphrase [REDACTED:prose-secret]\nthe pw is [REDACTED:prose-secret]\n"
        "the password is \"[REDACTED:prose-secret]\"\nlogin with admin / [REDACTED:prose-secret]\nLogin: root/[REDACTED:prose-secret]\n"
        "you can login as bob/[REDACTED:prose-secret].",
    ),
    # --- what a secret-printing command printed, in a pasted terminal session or a `!` turn ---
    ("pasted-pass-show", "$ pass show email/gmail\nTr0ub4dor3xq\n$ ls\nREADME.md", "$ pass show email/gmail\n[REDACTED:command-output]\n$ ls\nREADME.md"),
    (
        "bash-mode-op-read",
        "<bash-input>op read op://dev/db/password</bash-input><bash-stdout>Tr0ub4dor3xq</bash-stdout><bash-stderr></bash-stderr>",
        "<bash-input>op read op://dev/db/password</bash-input><bash-stdout>[REDACTED:command-output]</bash-stdout><bash-stderr></bash-stderr>",
    ),
    (
        "bash-mode-escaped-in-a-json-string",  # a transcript's line in grep's output: the turn's line breaks are `\n` escapes
        's.jsonl:{"content": "<bash-input>op read \\"op://dev/db/password\\"</bash-input>\\n<bash-stdout>Tr0ub4dor3xq\\n</bash-stdout>\\n<bash-input>cat creds.txt</bash-input>\\n<bash-stdout>alice\\nTr0ub4dor3xq\\n</bash-stdout>',
        's.jsonl:{"content": "<bash-input>op read \\"op://dev/db/password\\"</bash-input>\\n<bash-stdout>[REDACTED:command-output]</bash-stdout>\\n<bash-input>cat creds.txt</bash-input>\\n<bash-stdout>alice\\n[REDACTED:command-output]\\n</bash-stdout>',
    ),
    (
        "bash-mode-tags-unicode-escaped",  # Go's encoding/json writes a turn's `<` and `>` as `\u003c` and `\u003e`
        's.jsonl:{"content": "\\u003cbash-input\\u003egh auth token\\u003c/bash-input\\u003e\\u003cbash-stdout\\u003eTr0ub4dor3xq\\n\\u003c/bash-stdout\\u003e'
        '\\u003cbash-input\\u003ecat creds.txt\\u003c/bash-input\\u003e\\u003cbash-stdout\\u003ealice\\nTr0ub4dor3xq\\n\\u003c/bash-stdout\\u003e',
        's.jsonl:{"content": "\\u003cbash-input\\u003egh auth token\\u003c/bash-input\\u003e\\u003cbash-stdout\\u003e[REDACTED:command-output]\\u003c/bash-stdout\\u003e'
        '\\u003cbash-input\\u003ecat creds.txt\\u003c/bash-input\\u003e\\u003cbash-stdout\\u003ealice\\n[REDACTED:command-output]\\n\\u003c/bash-stdout\\u003e',
    ),
    (
        "pasted-session-escaped-in-a-json-string",  # a transcript's line in grep's output: the session's line breaks are `\n` escapes
        's.jsonl:{"content": "$ pass show db/prod\\nTr0ub4dor3xq\\n$ ls\\nREADME.md\\n$ cat creds.txt\\nalice\\nTr0ub4dor3xq\\n"}',
        's.jsonl:{"content": "$ pass show db/prod\\n[REDACTED:command-output]\\n$ ls\\nREADME.md\\n$ cat creds.txt\\nalice\\n[REDACTED:command-output]\\n"}',
    ),
    ("pasted-printenv", "dev@box:~/app$ printenv STRIPE_SECRET\nTr0ub4dor3xq", "dev@box:~/app$ printenv STRIPE_SECRET\n[REDACTED:command-output]"),
    (
        'authorization-any-scheme',
        'curl -H "Authorization: SSWS 00QCjAl4MlV-WPXM5sUsNp0bEOAqHFRo1Jj3ew9Zh8"\nAuthorization: Splunk 8f2c1e4b-77aa-4c1d-9e2f-0b5d3c7a9e11\n-H \'Authorization: Bot MTA5NzQ4OTk4Nzc1.GxYz12.abcDEF456ghi\'\nAuthorization: GenieKey 3c1f9e2d7b4a6058\n-H "Authorization: Klaviyo-API-Key pk_4f8e2a9c1d7b3e6f"\nAuthorization: SharedKey myaccount:c2lnbmF0dXJlMTIzNDU2\nauthorization: Zq8vLm2pXw41',
        'curl -H "Authorization: SSWS [REDACTED:authorization]"\nAuthorization: Splunk [REDACTED:authorization]\n-H \'Authorization: Bot [REDACTED:authorization]\'\nAuthorization: GenieKey [REDACTED:authorization]\n-H "Authorization: Klaviyo-API-Key [REDACTED:authorization]"\nAuthorization: SharedKey [REDACTED:authorization]\nauthorization: [REDACTED:authorization]',
    ),
    (
        'header-key-names',
        'curl -H "DD-APPLICATION-KEY: 4f8e2a9c1d7b3e6f0a5c" -H "X-Tenant-Key: Zq8vLm2pXw41"\nNEW_RELIC_LICENSE_KEY=eu01xx4f8e2a9c1d7b3e6f0a5cNRAL\nlicense_key: 4f8e2a9c1d7b3e6f0a5c\nconst applicationKey = "Zq8vLm2pXw41";\nsubscription_key = "4f8e2a9c1d7b3e6f0a5c"',
        'curl -H "DD-APPLICATION-KEY: [REDACTED:assignment]" -H "X-Tenant-Key: [REDACTED:assignment]"\nNEW_RELIC_LICENSE_KEY=[REDACTED:assignment]\nlicense_key: [REDACTED:assignment]\nconst applicationKey = "[REDACTED:assignment]";\nsubscription_key = "[REDACTED:assignment]"',
    ),
    (
        'cli-flags-more-programs',
        'cqlsh -u cassandra -p Zq8vLm2pXw host\ncypher-shell -u neo4j -p Zq8vLm2pXw\nrabbitmqadmin -u admin -p Zq8vLm2pXw list queues\ncertutil -importpfx -p Zq8vLm2pXw cert.pfx\ninflux config create -n prod -u http://localhost:8086 -o org -t Zq8vLm2pXw\ndoctl auth init -t Zq8vLm2pXw\ncodecov -t Zq8vLm2pXw\njarsigner -storepass Zq8vLm2pXw app.jar alias\nconsul acl token create -secret Zq8vLm2pXw\nnomad status -token Zq8vLm2pXw\netcdctl --user root:Zq8vLm2pXw get /x\ncrane auth login ghcr.io -u bob -p Zq8vLm2pXw',
        'cqlsh -u cassandra -p [REDACTED:cli-flag] host\ncypher-shell -u neo4j -p [REDACTED:cli-flag]\nrabbitmqadmin -u admin -p [REDACTED:cli-flag] list queues\ncertutil -importpfx -p [REDACTED:cli-flag] cert.pfx\ninflux config create -n prod -u http://localhost:8086 -o org -t [REDACTED:cli-flag]\ndoctl auth init -t [REDACTED:cli-flag]\ncodecov -t [REDACTED:cli-flag]\njarsigner -storepass [REDACTED:cli-flag] app.jar alias\nconsul acl token create -secret [REDACTED:cli-flag]\nnomad status -token [REDACTED:cli-flag]\netcdctl --user root:[REDACTED:cli-flag] get /x\ncrane auth login ghcr.io -u bob -p [REDACTED:cli-flag]',
    ),
    (
        'cli-creds-flags',
        'skopeo copy --src-creds bob:Zq8vLm2pXw docker://a docker://b\npodman pull --creds=bob:Zq8vLm2pXw quay.io/x\nwget --proxy-user bob:Zq8vLm2pXw https://x\nsqlmap -u http://x --auth-type basic --auth-cred "admin:Zq8vLm2pXw"\nmitmproxy --proxyauth bob:Zq8vLm2pXw\nhey --basic-auth bob:Zq8vLm2pXw http://x',
        'skopeo copy --src-creds bob:[REDACTED:cli-flag] docker://a docker://b\npodman pull --creds=bob:[REDACTED:cli-flag] quay.io/x\nwget --proxy-user bob:[REDACTED:cli-flag] https://x\nsqlmap -u http://x --auth-type basic --auth-cred "admin:[REDACTED:cli-flag]"\nmitmproxy --proxyauth bob:[REDACTED:cli-flag]\nhey --basic-auth bob:[REDACTED:cli-flag] http://x',
    ),
    (
        'cli-user-then-p',
        "snowsql -a acct -u me -p Zq8vLm2pXw\nmongostat -u admin -p Zq8vLm2pXw\njava -jar tool.jar --user admin -p 'Zq8 vLm2'\n./deploy.sh --username=ops -p hunter2",
        "snowsql -a acct -u me -p [REDACTED:cli-flag]\nmongostat -u admin -p [REDACTED:cli-flag]\njava -jar tool.jar --user admin -p '[REDACTED:cli-flag]'\n./deploy.sh --username=ops -p [REDACTED:cli-flag]",
    ),
    (
        'stdin-readers-more',
        'gh auth login --with-token <<< Zq8vLm2pXw\nsshfs -o password_stdin bob@host:/ /mnt <<< Zq8vLm2pXw\necho -n Zq8vLm2pXw | kubectl create secret generic db --from-file=pw=/dev/stdin',
        'gh auth login --with-token <<< [REDACTED:cli-flag]\nsshfs -o password_stdin bob@host:/ /mnt <<< [REDACTED:cli-flag]\necho -n [REDACTED:cli-flag] | kubectl create secret generic db --from-file=pw=/dev/stdin',
    ),
    (
        'pair-setters',
        'System.setProperty("javax.net.ssl.keyStorePassword", "Zq8vLm2pXw");\nprops.setProperty("mail.smtp.password", "Zq8vLm2pXw");\nviper.Set("db.password", "Zq8vLm2pXw")\nsetenv("DB_PASSWORD", "Zq8vLm2pXw", 1);\n[Environment]::SetEnvironmentVariable("API_KEY", "Zq8vLm2pXw", "User")\nconfig.set(\'database\', \'password\', \'Zq8vLm2pXw\')',
        'System.setProperty("javax.net.ssl.keyStorePassword", "[REDACTED:assignment]");\nprops.setProperty("mail.smtp.password", "[REDACTED:assignment]");\nviper.Set("db.password", "[REDACTED:assignment]")\nsetenv("DB_PASSWORD", "[REDACTED:assignment]", 1);\n[Environment]::SetEnvironmentVariable("API_KEY", "[REDACTED:assignment]", "User")\nconfig.set(\'database\', \'password\', \'[REDACTED:assignment]\')',
    ),
    (
        'variable-defaults',
        'POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-Zq8vLm2pXw}\nspring.datasource.password=${DB_PASSWORD:Zq8vLm2pXw}\nexport TOKEN=${API_TOKEN-abc123def456}\npassword: {{ .Values.db.password | default "Zq8vLm2pXw" }}\napi_key: {{ api_key | default(\'Zq8vLm2pXw\') }}',
        'POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-[REDACTED:assignment]}\nspring.datasource.password=${DB_PASSWORD:[REDACTED:assignment]}\nexport TOKEN=${API_TOKEN-[REDACTED:assignment]}\npassword: {{ .Values.db.password | default "[REDACTED:assignment]" }}\napi_key: {{ api_key | default(\'[REDACTED:assignment]\') }}',
    ),
    (
        'fallback-literals',
        'const JWT_SECRET = process.env.JWT_SECRET || "supersecret123";\nSECRET_KEY = os.getenv("SECRET_KEY") or "django-insecure-9x8y7z"\n$password = getenv("DB_PW") ?: "Zq8vLm2pXw";\ntoken = ENV["TOKEN"] || "Zq8vLm2pXw"\nconst apiKey = config.apiKey ?? "Zq8vLm2pXw";',
        'const JWT_SECRET = process.env.JWT_SECRET || "[REDACTED:assignment]";\nSECRET_KEY = os.getenv("SECRET_KEY") or "[REDACTED:assignment]"\n$password = getenv("DB_PW") ?: "[REDACTED:assignment]";\ntoken = ENV["TOKEN"] || "[REDACTED:assignment]"\nconst apiKey = config.apiKey ?? "[REDACTED:assignment]";',
    ),
    (
        'wrapped-literals',
        'let cfg = Config { password: String::from("Zq8vLm2pXw"), port: 5432 };\napi_key = SecretStr("Zq8vLm2pXw")\npassword: Some(String::from("Zq8vLm2pXw")),\ntoken: SecretString::new("Zq8vLm2pXw".into()),\nString password = new String("Zq8vLm2pXw");',
        'let cfg = Config { password: String::from("[REDACTED:assignment]"), port: 5432 };\napi_key = SecretStr("[REDACTED:assignment]")\npassword: Some(String::from("[REDACTED:assignment]")),\ntoken: SecretString::new("[REDACTED:assignment]".into()),\nString password = new String("[REDACTED:assignment]");',
    ),
    (
        'declared-literals',
        'var password string = "Zq8vLm2pXw"\nDim apiKey As String = "Zq8vLm2pXw"\nchar password[] = "Zq8vLm2pXw";\n#define WIFI_PASSWORD "Zq8vLm2pXw"\n#define API_KEY "Zq8vLm2pXw"',
        'var password string = "[REDACTED:assignment]"\nDim apiKey As String = "[REDACTED:assignment]"\nchar password[] = "[REDACTED:assignment]";\n#define WIFI_PASSWORD "[REDACTED:assignment]"\n#define API_KEY "[REDACTED:assignment]"',
    ),
    (
        'typed-into-password-field',
        'await page.fill("#password", "Zq8vLm2pXw");\nawait page.getByLabel("Password").fill("Zq8vLm2pXw");\nawait page.type(\'input[name="password"]\', \'Zq8vLm2pXw\');\ncy.get(\'#password\').type(\'Zq8vLm2pXw{enter}\')\ndriver.find_element(By.ID, "password").send_keys("Zq8vLm2pXw")\n$I->fillField("password", "Zq8vLm2pXw");\nfill_in "Password", with: "Zq8vLm2pXw"\nawait userEvent.type(screen.getByLabelText(/password/i), "Zq8vLm2pXw")',
        'await page.fill("#password", "[REDACTED:assignment]");\nawait page.getByLabel("Password").fill("[REDACTED:assignment]");\nawait page.type(\'input[name="password"]\', \'[REDACTED:assignment]\');\ncy.get(\'#password\').type(\'[REDACTED:assignment]{enter}\')\ndriver.find_element(By.ID, "password").send_keys("[REDACTED:assignment]")\n$I->fillField("password", "[REDACTED:assignment]");\nfill_in "Password", with: "[REDACTED:assignment]"\nawait userEvent.type(screen.getByLabelText(/password/i), "[REDACTED:assignment]")',
    ),
    (
        'echo-into-secret-file',
        "echo 'Zq8vLm2pXw' > ~/.vault_pass\nprintf '%s' 'Zq8vLm2pXw' > /run/secrets/db_password\necho -n Zq8vLm2pXw | sudo tee /etc/app/api_key\necho Zq8vLm2pXw > secret.txt",
        "echo '[REDACTED:assignment]' > ~/.vault_pass\nprintf '%s' '[REDACTED:assignment]' > /run/secrets/db_password\necho -n [REDACTED:assignment] | sudo tee /etc/app/api_key\necho [REDACTED:assignment] > secret.txt",
    ),
    (
        'odbc-braced-password',
        'Driver={ODBC Driver 17 for SQL Server};Server=tcp:db.example.net,1433;Uid=sa;Pwd={Zq8vLm2pXw};\nDRIVER={FreeTDS};UID=sa;PWD={p@ss;w0rd};',
        'Driver={ODBC Driver 17 for SQL Server};Server=tcp:db.example.net,1433;Uid=sa;Pwd={[REDACTED:assignment]};\nDRIVER={FreeTDS};UID=sa;PWD={[REDACTED:assignment]};',
    ),
    (
        'yaml-str-tag',
        'api_key: !!str Zq8vLm2pXw\npassword: !!str "0123"',
        'api_key: !!str [REDACTED:assignment]\npassword: !!str "[REDACTED:assignment]"',
    ),
    (
        'nested-quoted-values',
        'KAFKA_SASL_JAAS_CONFIG: \'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="Zq8vLm2pXw";\'\nconn_str = \'host=db password="Zq8vLm2pXw"\'\n"sasl.jaas.config": "PlainLoginModule required username=\\"u\\" password=\\"Zq8vLm2pXw\\";"',
        'KAFKA_SASL_JAAS_CONFIG: \'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="[REDACTED:assignment]";\'\nconn_str = \'host=db password="[REDACTED:assignment]"\'\n"sasl.jaas.config": "PlainLoginModule required username=\\"u\\" password=\\"[REDACTED:assignment]\\";"',
    ),
    (
        'url-token-user',
        'git clone https://0123456789abcdef0123456789abcdef01234567@github.com/org/repo.git\nSENTRY_DSN=https://abcdef0123456789abcdef0123456789@o123.ingest.sentry.io/456',
        'git clone https://[REDACTED:url-password]@github.com/org/repo.git\nSENTRY_DSN=https://[REDACTED:url-password]@o123.ingest.sentry.io/456',
    ),
    (
        'code-literal-more-calls',
        'Credentials.basic("bob", "Zq8vLm2pXw")\nnew PasswordCredential("bob", "Zq8vLm2pXw".toCharArray())\nClientSecretCredential("tenant-id", "client-id", "Zq8vLm2pXw")\ntweepy.OAuthHandler("ckey", "Zq8vLm2pXw")\nalgoliasearch(\'APPID\', \'Zq8vLm2pXw\')\ncrypto.createCipheriv(\'aes-256-cbc\', \'Zq8vLm2pXw\', iv)\nCryptoJS.AES.encrypt(data, \'Zq8vLm2pXw\')\nCryptoJS.HmacSHA256(msg, \'Zq8vLm2pXw\')\nJwts.builder().signWith(SignatureAlgorithm.HS256, "Zq8vLm2pXw")',
        'Credentials.basic("bob", "[REDACTED:code-literal]")\nnew PasswordCredential("bob", "[REDACTED:code-literal]".toCharArray())\nClientSecretCredential("tenant-id", "client-id", "[REDACTED:code-literal]")\ntweepy.OAuthHandler("ckey", "[REDACTED:code-literal]")\nalgoliasearch(\'APPID\', \'[REDACTED:code-literal]\')\ncrypto.createCipheriv(\'aes-256-cbc\', \'[REDACTED:code-literal]\', iv)\nCryptoJS.AES.encrypt(data, \'[REDACTED:code-literal]\')\nCryptoJS.HmacSHA256(msg, \'[REDACTED:code-literal]\')\nJwts.builder().signWith(SignatureAlgorithm.HS256, "[REDACTED:code-literal]")',
    ),
    (
        'xml-named-elements',
        '<property name="hibernate.connection.password">Zq8vLm2pXw</property>\n<entry key="db.password">Zq8vLm2pXw</entry>\n<string name="api_key">Zq8vLm2pXw</string>\n<key>APIKey</key>\n\t<string>Zq8vLm2pXw</string>\n<meta-data android:name="io.sentry.auth-token" android:value="Zq8vLm2pXw"/>',
        '<property name="hibernate.connection.password">[REDACTED:assignment]</property>\n<entry key="db.password">[REDACTED:assignment]</entry>\n<string name="api_key">[REDACTED:assignment]</string>\n<key>APIKey</key>\n\t<string>[REDACTED:assignment]</string>\n<meta-data android:name="io.sentry.auth-token" android:value="[REDACTED:assignment]"/>',
    ),
    (
        'prose-backticks-and-for',
        "Use these creds: user `admin`, password `Zq8vLm2pXw`\nThe password for the staging DB is `Zq8vLm2pXw`.\nPassword for 'https://bob@github.com': Zq8vLm2pXw\nRotate the token `ghx1234567abcdef` now",
        "Use these creds: user `admin`, password `[REDACTED:prose-secret]`\nThe password for the staging DB is `[REDACTED:prose-secret]`.\nPassword for 'https://bob@github.com': [REDACTED:prose-secret]\nRotate the token `[REDACTED:prose-secret]` now",
    ),
    (
        'sql-set-password-for',
        'SET PASSWORD FOR \'bob\'@\'localhost\' = \'Zq8vLm2pXw\';\nset password for \'app\'@\'%\' = \'Zq8vLm2pXw\';\ndb.changeUserPassword("admin", "Zq8vLm2pXw")',
        'SET PASSWORD FOR \'bob\'@\'localhost\' = \'[REDACTED:sql-password]\';\nset password for \'app\'@\'%\' = \'[REDACTED:sql-password]\';\ndb.changeUserPassword("admin", "[REDACTED:code-literal]")',
    ),
    (
        'cli-user-then-p-subcommands',
        'az sql server create -n db1 -g rg -u sqladmin -p Zq8vLm2pXw',
        'az sql server create -n db1 -g rg -u sqladmin -p [REDACTED:cli-flag]',
    ),
    (
        'prose-set-password-to',
        'set the root password to Zq8vLm2pXw.\nI changed the password to "swordfish"\nreset my password to Tr0ub4dor3',
        'set the root password to [REDACTED:prose-secret].\nI changed the password to "[REDACTED:prose-secret]"\nreset my password to [REDACTED:prose-secret]',
    ),
    (
        'oracle-powershell-oauth-dbclis',
        'jdbc:oracle:thin:scott/Zq8vLm2pXw@//dbhost:1521/ORCL\nsqlldr userid=scott/Zq8vLm2pXw control=x.ctl\n$pw = "Zq8vLm2pXw" | ConvertTo-SecureString -AsPlainText -Force\nnpm install git+https://0123456789abcdef0123456789abcdef01234567:x-oauth-basic@github.com/org/repo.git\ntsql -S srv -U sa -P Zq8vLm2pXw\nvsql -U dbadmin -w Zq8vLm2pXw',
        'jdbc:oracle:thin:scott/[REDACTED:url-password]@//dbhost:1521/ORCL\nsqlldr userid=scott/[REDACTED:url-password] control=x.ctl\n$pw = "[REDACTED:cli-flag]" | ConvertTo-SecureString -AsPlainText -Force\nnpm install git+https://[REDACTED:url-password]:x-oauth-basic@github.com/org/repo.git\ntsql -S srv -U sa -P [REDACTED:cli-flag]\nvsql -U dbadmin -w [REDACTED:cli-flag]',
    ),
    (
        'provider-prefixes-more',
        'pscale_pw_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdEF sb_secret_N7UND0UgjKTVKUodkm0Hg_xSvEMPvz re_c1tpEyD8_NKFusih9vKVQknRAQfmFcWCv phx_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg squ_0123456789abcdef0123456789abcdef01234567 pnu_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 ATBB0123456789abcdefABCDEFghijklmnopqr sk-lf-01234567-89ab-cdef-0123-456789abcdef xoxc-0123456789-0123456789-0123456789-abcdef0123456789',
        '[REDACTED:planetscale-token] [REDACTED:supabase-token] [REDACTED:resend-key] [REDACTED:posthog-key] [REDACTED:sonarqube-token] [REDACTED:prefect-key] [REDACTED:bitbucket-token] [REDACTED:langfuse-key] [REDACTED:slack-token]',
    ),
    (
        'user-and-key',
        '{"username":"bobsmith","key":"0123456789abcdef0123456789abcdef"}\nusername: bob\nkey: 0123456789abcdef0123456789abcdef',
        '{"username":"bobsmith","key":"[REDACTED:assignment]"}\nusername: bob\nkey: [REDACTED:assignment]',
    ),
    (
        'wallet-keys',
        'PRIVATE_KEY=0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318\nMNEMONIC="abandon ability able about above absent absorb abstract absurd abuse access accident"\nseed_phrase: "abandon ability able about above absent absorb abstract absurd abuse access accident"\nconst wallet = new ethers.Wallet("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318");\naccounts: ["0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"]',
        'PRIVATE_KEY=[REDACTED:assignment]\nMNEMONIC="[REDACTED:assignment]"\nseed_phrase: "[REDACTED:assignment]"\nconst wallet = new ethers.Wallet("0x[REDACTED:assignment]");\naccounts: ["0x[REDACTED:assignment]"]',
    ),
    (
        'conditional-assignments',
        'API_KEY ?= Zq8vLm2pXw\nexport DB_PASSWORD ?= Zq8vLm2pXw\n@token ||= "Zq8vLm2pXw"\ntoken ??= "Zq8vLm2pXw"',
        'API_KEY ?= [REDACTED:assignment]\nexport DB_PASSWORD ?= [REDACTED:assignment]\n@token ||= "[REDACTED:assignment]"\ntoken ??= "[REDACTED:assignment]"',
    ),
    (
        'piped-to-passwd',
        "printf 'Zq8vLm2pXw\\nZq8vLm2pXw\\n' | passwd bob\nyes Zq8vLm2pXw | sudo passwd bob\necho Zq8vLm2pXw | smbpasswd -s -a bob",
        "printf '[REDACTED:cli-flag]' | passwd bob\nyes [REDACTED:cli-flag] | sudo passwd bob\necho [REDACTED:cli-flag] | smbpasswd -s -a bob",
    ),
    (
        'device-config-passwords',
        'username admin privilege 15 password 0 Zq8vLm2pXw\nenable secret 0 Zq8vLm2pXw\n    user admin insecure-password Zq8vLm2pXw\npoll imap.example.com protocol IMAP user "bob" password "Zq8vLm2pXw"\nsnmpwalk -v3 -u bob -l authPriv -a SHA -A Zq8vLm2pXw -x AES -X Zq8vLm2pXw host\nipmitool -I lanplus -H 10.0.0.5 -U admin -P Zq8vLm2pXw power status\ntransmission-remote -n bob:Zq8vLm2pXw -l',
        'username admin privilege 15 password 0 [REDACTED:cli-flag]\nenable secret 0 [REDACTED:cli-flag]\n    user admin insecure-password [REDACTED:cli-flag]\npoll imap.example.com protocol IMAP user "bob" password "[REDACTED:cli-flag]"\nsnmpwalk -v3 -u bob -l authPriv -a SHA -A [REDACTED:cli-flag] -x AES -X [REDACTED:cli-flag] host\nipmitool -I lanplus -H 10.0.0.5 -U admin -P [REDACTED:cli-flag] power status\ntransmission-remote -n bob:[REDACTED:cli-flag] -l',
    ),
    (
        'diff-lines-commands',
        '--- a/deploy.sh\n+++ b/deploy.sh\n@@ -1,3 +1,3 @@\n-mysql -u root -pZq8vLm2pXw app\n+curl -u bob:Zq8vLm2pXw https://x\n+sshpass -p Zq8vLm2pXw ssh host\n+cargo login Zq8vLm2pXw\n+#define WIFI_PASSWORD "Zq8vLm2pXw"',
        '--- a/deploy.sh\n+++ b/deploy.sh\n@@ -1,3 +1,3 @@\n-mysql -u root -p[REDACTED:cli-flag] app\n+curl -u bob:[REDACTED:cli-flag] https://x\n+sshpass -p [REDACTED:cli-flag] ssh host\n+cargo login [REDACTED:cli-flag]\n+#define WIFI_PASSWORD "[REDACTED:assignment]"',
    ),
    (
        'arrows-dumps-tables',
        '      ~ admin_password = "Zq8vLm2pXwOLD" -> "Zq8vLm2pXw"\narray(1) {\n  ["api_key"]=>\n  string(10) "Zq8vLm2pXw"\n}\n| API_KEY     | Zq8vLm2pXw |\n-[ RECORD 1 ]--\nid       | 1\npassword | Zq8vLm2pXw\nok: [web1] => {"msg": "db password is Zq8vLm2pXw"}',
        '      ~ admin_password = "[REDACTED:assignment]" -> "[REDACTED:assignment]"\narray(1) {\n  ["api_key"]=>\n  string(10) "[REDACTED:assignment]"\n}\n| API_KEY     | [REDACTED:assignment] |\n-[ RECORD 1 ]--\nid       | 1\npassword | [REDACTED:assignment]\nok: [web1] => {"msg": "db password is [REDACTED:prose-secret]"}',
    ),
    (
        'url-query-key-auth',
        "curl 'https://api.example.com/v1/x?key=4f8e2a9c1d7b3e6f0a5c&q=1'\nhttps://x.firebaseio.com/a.json?auth=Zq8vLm2pXwQ4rT7yU1iO",
        "curl 'https://api.example.com/v1/x?key=[REDACTED:assignment]&q=1'\nhttps://x.firebaseio.com/a.json?auth=[REDACTED:assignment]",
    ),
    (
        'dollar-leading-passwords',
        'DB_PASSWORD=\'$uperS3cret!\'\npassword: "$ecr3t#1"',
        'DB_PASSWORD=\'[REDACTED:assignment]\'\npassword: "[REDACTED:assignment]"',
    ),
    (
        'narration-secrets',
        "I've set `DB_PASSWORD` to `Zq8vLm2pXw` in .env.\nI set DB_PASSWORD to Zq8vLm2pXw in your .env file.\nThe `SECRET_KEY` is now `Zq8vLm2pXw`.\n- **Password**: `Zq8vLm2pXw`\n**API Key:** Zq8vLm2pXw\nUsing token Zq8vLm2pXw for authentication.",
        "I've set `DB_PASSWORD` to `[REDACTED:prose-secret]` in .env.\nI set DB_PASSWORD to [REDACTED:prose-secret] in your .env file.\nThe `SECRET_KEY` is now `[REDACTED:prose-secret]`.\n- **Password**: `[REDACTED:prose-secret]`\n**API Key:** [REDACTED:prose-secret]\nUsing token [REDACTED:prose-secret] for authentication.",
    ),
    (
        'curl-key-as-user',
        'curl -u Zq8vLm2pXwQ4rT7yU1iO: https://api.example.com/v1/charges\ncurl --user "Zq8vLm2pXwQ4rT7yU1iO:" https://x',
        'curl -u [REDACTED:cli-flag]: https://api.example.com/v1/charges\ncurl --user "[REDACTED:cli-flag]:" https://x',
    ),
    (
        'composer-auth-json',
        '{"github-oauth": {"github.com": "Zq8vLm2pXwQ4rT7yU1iO"}, "gitlab-token": {"gitlab.example.com": "Zq8vLm2pXwQ4rT7"}}',
        '{"github-oauth": {"github.com": "[REDACTED:assignment]"}, "gitlab-token": {"gitlab.example.com": "[REDACTED:assignment]"}}',
    ),
    (
        'plain-credential-pairs',
        'auth: bob:Zq8vLm2pXw\nbasic_auth: "bob:Zq8vLm2pXw"\nnpmRegistries:\n  "https://npm.corp":\n    npmAuthIdent: "bob:Zq8vLm2pXw"\nhttp_auth = "elastic:Zq8vLm2pXw"',
        'auth: [REDACTED:assignment]\nbasic_auth: "[REDACTED:assignment]"\nnpmRegistries:\n  "https://npm.corp":\n    npmAuthIdent: "[REDACTED:assignment]"\nhttp_auth = "[REDACTED:assignment]"',
    ),
    (
        'sql-cloud-secrets',
        "COPY t FROM 's3://b/x' ACCESS_KEY_ID 'AKIAIOSFODNN7EXAMPL' SECRET_ACCESS_KEY 'Zq8vLm2pXw' SESSION_TOKEN 'Zq8vLm2pXwQ4';\nCREATE SECRET (TYPE S3, KEY_ID 'AKIAIOSFODNN7EXAMPL', SECRET 'Zq8vLm2pXw', REGION 'us-east-1');",
        "COPY t FROM 's3://b/x' ACCESS_KEY_ID 'AKIAIOSFODNN7EXAMPL' SECRET_ACCESS_KEY '[REDACTED:sql-password]' SESSION_TOKEN '[REDACTED:sql-password]';\nCREATE SECRET (TYPE S3, KEY_ID 'AKIAIOSFODNN7EXAMPL', SECRET '[REDACTED:sql-password]', REGION 'us-east-1');",
    ),
    (
        'positional-more-programs',
        'snyk auth Zq8vLm2pXwQ4rT7y\nnuget setapikey Zq8vLm2pXw -Source https://x\nneo4j-admin dbms set-initial-password Zq8vLm2pXw',
        'snyk auth [REDACTED:cli-flag]\nnuget setapikey [REDACTED:cli-flag] -Source https://x\nneo4j-admin dbms set-initial-password [REDACTED:cli-flag]',
    ),
    (
        'cli-key-flags-more',
        'tailscale up --authkey Zq8vLm2pXwQ4\nnewrelic-install --license-key Zq8vLm2pXw\ntool --master-key Zq8vLm2pXw',
        'tailscale up --authkey [REDACTED:cli-flag]\nnewrelic-install --license-key [REDACTED:cli-flag]\ntool --master-key [REDACTED:cli-flag]',
    ),
    (
        'pentest-tool-hits',
        "SMB         10.0.0.5        445    DC01             [+] corp.local\\admin:Zq8vLm2pXw (Pwn3d!)\n[+] 10.0.0.5:445 - Success: 'CORP\\admin:Zq8vLm2pXw'",
        "SMB         10.0.0.5        445    DC01             [+] corp.local\\admin:[REDACTED:cli-flag] (Pwn3d!)\n[+] 10.0.0.5:445 - Success: 'CORP\\admin:[REDACTED:cli-flag]'",
    ),
    (
        'bundler-host-credentials',
        'BUNDLE_GEMS__CONTRIBSYS__COM=abcd1234:Zq8vLm2pXw\nexport BUNDLE_RUBYGEMS__PKG__GITHUB__COM="bob:Zq8vLm2pXw"',
        'BUNDLE_GEMS__CONTRIBSYS__COM=abcd1234:[REDACTED:assignment]\nexport BUNDLE_RUBYGEMS__PKG__GITHUB__COM="bob:[REDACTED:assignment]"',
    ),
    (
        'provider-prefixes-more-2',
        'pscale_tkn_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdEF pscale_oauth_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdEF napi_abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01 hcaik_01hxyzabcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmn fw_AbCdEfGhIjKlMnOpQrStUv0123 AKCp8AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghijklmnopqrstuvwxyz01234',
        '[REDACTED:planetscale-token] [REDACTED:planetscale-token] [REDACTED:neon-key] [REDACTED:honeycomb-key] [REDACTED:fireworks-key] [REDACTED:jfrog-key]',
    ),
    (
        'net-use-and-encrypt-string',
        "net use Z: \\\\srv\\share /user:admin Zq8vLm2pXw\nansible-vault encrypt_string 'Zq8vLm2pXw' --name 'db_password'\nansible-vault encrypt_string --vault-id prod@prompt --name db_pw 'Zq8vLm2pXw'",
        "net use Z: \\\\srv\\share /user:admin [REDACTED:cli-flag]\nansible-vault encrypt_string '[REDACTED:cli-flag]' --name 'db_password'\nansible-vault encrypt_string --vault-id prod@prompt --name db_pw '[REDACTED:cli-flag]'",
    ),
    (
        'server-setup-passwords',
        '2024-01-01T00:00:00.000000Z 6 [Note] [MY-010454] [Server] A temporary password is generated for root@localhost: Zq8vLm2pXw\nChanged password for user elastic\nPASSWORD elastic = Zq8vLm2pXw\nredis-cli CONFIG SET requirepass "Zq8vLm2pXw"\nAdmin password set to Zq8vLm2pXw\nthe password was changed to Zq8vLm2pXw.\nthe password (Zq8vLm2pXw) works\nYour API key (`Zq8vLm2pXw`) has been saved.',
        '2024-01-01T00:00:00.000000Z 6 [Note] [MY-010454] [Server] A temporary password is generated for root@localhost: [REDACTED:prose-secret]\nChanged password for user elastic\nPASSWORD elastic = [REDACTED:cli-flag]\nredis-cli CONFIG SET requirepass "[REDACTED:redis-password]"\nAdmin password set to [REDACTED:prose-secret]\nthe password was changed to [REDACTED:prose-secret].\nthe password ([REDACTED:prose-secret]) works\nYour API key (`[REDACTED:prose-secret]`) has been saved.',
    ),
    (
        'redis-acl-and-jenkins',
        '127.0.0.1:6379> ACL SETUSER alice on >Zq8vLm2pXw ~cached:* +get\nPlease use the following password to proceed to installation:\n\n0123456789abcdef0123456789abcdef\n\nThis may also be found at: x',
        '127.0.0.1:6379> ACL SETUSER alice on >[REDACTED:redis-password] ~cached:* +get\nPlease use the following password to proceed to installation:\n\n[REDACTED:cli-flag]\n\nThis may also be found at: x',
    ),
    (
        'dsl-settings',
        'signingConfigs {\n    release {\n        storePassword "Zq8vLm2pXw"\n        keyPassword "Zq8vLm2pXw"\n    }\n}\nuser "bob" do\n  password "Zq8vLm2pXw"\nend\nset :api_token, "Zq8vLm2pXw"\nbuildConfigField "String", "API_KEY", "\\"Zq8vLm2pXw\\""',
        'signingConfigs {\n    release {\n        storePassword "[REDACTED:assignment]"\n        keyPassword "[REDACTED:assignment]"\n    }\n}\nuser "bob" do\n  password "[REDACTED:assignment]"\nend\nset :api_token, "[REDACTED:assignment]"\nbuildConfigField "String", "API_KEY", "\\"[REDACTED:assignment]\\""',
    ),
    (
        'pdftk-input-pw',
        'pdftk in.pdf input_pw Zq8vLm2pXw output out.pdf',
        'pdftk in.pdf input_pw [REDACTED:cli-flag] output out.pdf',
    ),
    (
        'foreign-password-labels',
        'Passwort: Zq8vLm2pXw\ncontraseña: Zq8vLm2pXw\nmot de passe : Zq8vLm2pXw\nsenha: "segredo"\nпароль: Zq8vLm2pXw\n我的密码：Zq8vLm2pXw，谢谢\nパスワード：「Zq8vLm2pXw」です\n비밀번호: Zq8vLm2pXw\npassword：Zq8vLm2pXw',
        'Passwort: [REDACTED:prose-secret]\ncontraseña: [REDACTED:prose-secret]\nmot de passe : [REDACTED:prose-secret]\nsenha: "[REDACTED:prose-secret]"\nпароль: [REDACTED:prose-secret]\n我的密码：[REDACTED:prose-secret]，谢谢\nパスワード：「[REDACTED:prose-secret]」です\n비밀번호: [REDACTED:prose-secret]\npassword：[REDACTED:prose-secret]',
    ),
    (
        # A sentence that says what the password is, in another language (English's prose-secret
        # reads "the password is X"), and a password's name in another language before `=`.
        'foreign-password-sentences-and-names',
        'Le mot de passe est C3J27XDCG2LmlZGE\nDas Passwort lautet Zq8vLm2p!x.\nla contraseña es "Xk9#pq2L"\na senha é abc123!x\n'
        'het wachtwoord is Tr0ub4dor3\nпароль — Zx8kQ2mP\n我的密码是Zx8kQ2mP，谢谢\nパスワードはZx8kQ2mPです\n'
        'passwort=C3J27XDCG2LmlZGE\nmot_de_passe=Zq8vLm2pXw\nDB_KENNWORT=geheim123\ncontrasena=Zq8vLm2pXw\nsenha=abc123x',
        'Le mot de passe est [REDACTED:prose-secret]\nDas Passwort lautet [REDACTED:prose-secret].\nla contraseña es "[REDACTED:prose-secret]"\n'
        'a senha é [REDACTED:prose-secret]\nhet wachtwoord is [REDACTED:prose-secret]\nпароль — [REDACTED:prose-secret]\n'
        '我的密码是[REDACTED:prose-secret]，谢谢\nパスワードは[REDACTED:prose-secret]です\npasswort=[REDACTED:assignment]\n'
        'mot_de_passe=[REDACTED:assignment]\nDB_KENNWORT=[REDACTED:assignment]\ncontrasena=[REDACTED:assignment]\nsenha=[REDACTED:assignment]',
    ),
    (
        'jjwt-key-and-static-setter',
        'Keys.hmacShaKeyFor("Zq8vLm2pXwQ4rT7yU1iO".getBytes())\nStripe::setApiKey(\'Zq8vLm2pXw\');',
        'Keys.hmacShaKeyFor("[REDACTED:code-literal]".getBytes())\nStripe::setApiKey(\'[REDACTED:assignment]\');',
    ),
    (
        'bare-output-more-printers',
        'I ran:\nbw get password github\nZq8vLm2pXw\nwhy?\nheroku auth:token\nZq8vLm2pXwQ4rT7y',
        'I ran:\nbw get password github\n[REDACTED:command-output]\nwhy?\nheroku auth:token\n[REDACTED:command-output]',
    ),
    (
        'impacket-targets',
        "secretsdump.py corp/alice:Zq8vLm2pXw@10.0.0.5\npsexec.py 'corp.local/administrator:Zq8vLm2pXw@dc01.corp.local' cmd.exe\nimpacket-wmiexec -hashes :x CORP/bob:Zq8vLm2pXw@10.0.0.7\nmssqlclient.py -windows-auth corp/sa:Zq8vLm2pXw@10.0.0.9",
        "secretsdump.py corp/alice:[REDACTED:cli-flag]@10.0.0.5\npsexec.py 'corp.local/administrator:[REDACTED:cli-flag]@dc01.corp.local' cmd.exe\nimpacket-wmiexec -hashes :x CORP/bob:[REDACTED:cli-flag]@10.0.0.7\nmssqlclient.py -windows-auth corp/sa:[REDACTED:cli-flag]@10.0.0.9",
    ),
    (
        'impacket-no-host',
        'GetUserSPNs.py -request corp.local/alice:Zq8vLm2pXw -dc-ip 10.0.0.1\npython3 examples/getTGT.py corp.local/alice:Zq8vLm2pXw\nimpacket-GetNPUsers corp.local/alice:Zq8vLm2pXw -request',
        'GetUserSPNs.py -request corp.local/alice:[REDACTED:cli-flag] -dc-ip 10.0.0.1\npython3 examples/getTGT.py corp.local/alice:[REDACTED:cli-flag]\nimpacket-GetNPUsers corp.local/alice:[REDACTED:cli-flag] -request',
    ),
    (
        'httpie-token-auth',
        'http -A bearer -a Zq8vLm2pXw example.com\nhttp -a Zq8vLm2pXw -A bearer example.com\nhttp --auth-type=bearer --auth=Zq8vLm2pXw example.com\nxh --auth-type bearer --auth Zq8vLm2pXw httpbin.org/get\nhttps -a alice:Zq8vLm2pXw example.com\ncurlie -u alice:Zq8vLm2pXw example.com',
        'http -A bearer -a [REDACTED:cli-flag] example.com\nhttp -a [REDACTED:cli-flag] -A bearer example.com\nhttp --auth-type=bearer --auth=[REDACTED:cli-flag] example.com\nxh --auth-type bearer --auth [REDACTED:cli-flag] httpbin.org/get\nhttps -a alice:[REDACTED:cli-flag] example.com\ncurlie -u alice:[REDACTED:cli-flag] example.com',
    ),
    (
        'git-config-secret-keys',
        "git config github.token Zq8vLm2pXw\ngit config --global hub.oauthtoken Zq8vLm2pXw\ngit config --global sendemail.smtpPass 'Zq8vLm2pXw'\ngit -C repo config --file .git/config gitlab.token Zq8vLm2pXw\ngit config set --global imap.pass Zq8vLm2pXw",
        "git config github.token [REDACTED:cli-flag]\ngit config --global hub.oauthtoken [REDACTED:cli-flag]\ngit config --global sendemail.smtpPass '[REDACTED:cli-flag]'\ngit -C repo config --file .git/config gitlab.token [REDACTED:cli-flag]\ngit config set --global imap.pass [REDACTED:assignment]",
    ),
    (
        'r-assignments',
        'api_key <- "Zq8vLm2pXw"\ndb_password <<- \'Zq8vLm2pXw\'\nSys.setenv(GITHUB_PAT = "Zq8vLm2pXw")\nGITLAB_PAT=Zq8vLm2pXw',
        'api_key <- "[REDACTED:assignment]"\ndb_password <<- \'[REDACTED:assignment]\'\nSys.setenv(GITHUB_PAT = "[REDACTED:assignment]")\nGITLAB_PAT=[REDACTED:assignment]',
    ),
    (
        'git-config-secret-key-cases',
        'git config --global lab.authToken Zq8vLm2pXw\ngit config app.secret Zq8vLm2pXw\ngit config app.clientSecret Zq8vLm2pXw\ngit config sendemail.smtpPassword Zq8vLm2pXw',
        'git config --global lab.authToken [REDACTED:cli-flag]\ngit config app.secret [REDACTED:cli-flag]\ngit config app.clientSecret [REDACTED:cli-flag]\ngit config sendemail.smtpPassword [REDACTED:cli-flag]',
    ),
    (
        'api-clients-with-tokens',
        'g = Github("Zq8vLm2pXw")\ng = Github(auth=Auth.Token("Zq8vLm2pXw"))\ng = Github(auth=Auth.Login("alice", "Zq8vLm2pXw"))\nconst stripe = new Stripe(\'Zq8vLm2pXw\')\nconst o = new Octokit({auth: "Zq8vLm2pXw"})\nconst notion = new Client({ auth: "Zq8vLm2pXw" })\nclient = Client("AC0123456789abcdef0123456789abcdef", "Zq8vLm2pXw")\nconst tw = twilio("AC0123456789abcdef0123456789abcdef", "Zq8vLm2pXw")\nclient = WebClient("Zq8vLm2pXw")\ngl = gitlab.Gitlab("https://gitlab.com", "Zq8vLm2pXw")',
        'g = Github("[REDACTED:code-literal]")\ng = Github(auth=Auth.Token("[REDACTED:code-literal]"))\ng = Github(auth=Auth.Login("alice", "[REDACTED:code-literal]"))\nconst stripe = new Stripe(\'[REDACTED:code-literal]\')\nconst o = new Octokit({auth: "[REDACTED:assignment]"})\nconst notion = new Client({ auth: "[REDACTED:assignment]" })\nclient = Client("AC0123456789abcdef0123456789abcdef", "[REDACTED:code-literal]")\nconst tw = twilio("AC0123456789abcdef0123456789abcdef", "[REDACTED:code-literal]")\nclient = WebClient("[REDACTED:code-literal]")\ngl = gitlab.Gitlab("https://gitlab.com", "[REDACTED:code-literal]")',
    ),
    (
        'cookie-signing-secrets',
        "app.use(cookieParser('Zq8vLm2pXw'))\napp.use(cookieParser(['Zq8vLm2pXw', 'Zq8vLm2pXw']))\napp.keys = ['Zq8vLm2pXw', 'Zq8vLm2pXw']\napp.use(cookieSession({ name: 'session', keys: ['Zq8vLm2pXw'] }))\napp.use(session({ secret: ['Zq8vLm2pXw', 'Zq8vLm2pXw'], resave: false }))",
        "app.use(cookieParser('[REDACTED:code-literal]'))\napp.use(cookieParser(['[REDACTED:code-literal]', '[REDACTED:code-literal]']))\napp.keys = ['[REDACTED:code-literal]', '[REDACTED:code-literal]']\napp.use(cookieSession({ name: 'session', keys: ['[REDACTED:code-literal]'] }))\napp.use(session({ secret: ['[REDACTED:code-literal]', '[REDACTED:code-literal]'], resave: false }))",
    ),
    (
        'credentials-user-colon-password',
        'credentials: bob:Zq8vLm2pXw\nThe credentials are bob:Zq8vLm2pXw\ncreds=bob:Zq8vLm2pXw\nCredentials: admin:Zq8vLm2pXw (change them)',
        'credentials: bob:[REDACTED:prose-secret]\nThe credentials are bob:[REDACTED:prose-secret]\ncreds=bob:[REDACTED:prose-secret]\nCredentials: admin:[REDACTED:prose-secret] (change them)',
    ),
    (
        'composer-auth-in-a-string',
        'COMPOSER_AUTH=\'{"github-oauth": {"github.com": "Zq8vLm2pXw"}}\' composer install\nexport COMPOSER_AUTH=\'{"http-basic": {"repo.example.com": {"username": "u", "password": "Zq8vLm2pXw"}}}\'\nexport COMPOSER_AUTH="{\\"gitlab-token\\": {\\"gitlab.com\\": \\"Zq8vLm2pXw\\"}}"\n{"bearer": {"repo.example.org": "Zq8vLm2pXw"}}',
        'COMPOSER_AUTH=\'{"github-oauth": {"github.com": "[REDACTED:assignment]"}}\' composer install\nexport COMPOSER_AUTH=\'{"http-basic": {"repo.example.com": {"username": "u", "password": "[REDACTED:assignment]"}}}\'\nexport COMPOSER_AUTH="{\\"gitlab-token\\": {\\"gitlab.com\\": \\"[REDACTED:assignment]\\"}}"\n{"bearer": {"repo.example.org": "[REDACTED:assignment]"}}',
    ),
    (
        'openvpn-inline-user-pass',
        'client\nremote vpn.example.com 1194\n<auth-user-pass>\nalice\nZq8vLm2pXw\n</auth-user-pass>\n<http-proxy-user-pass>\r\nbob\r\nZq8vLm2pXw\r\n</http-proxy-user-pass>',
        'client\nremote vpn.example.com 1194\n<auth-user-pass>\nalice\n[REDACTED:assignment]\n</auth-user-pass>\n<http-proxy-user-pass>\r\nbob\r\n[REDACTED:assignment]\r\n</http-proxy-user-pass>',
    ),
    (
        'server-config-env',
        'SetEnv DB_PASSWORD Zq8vLm2pXw\n    SetEnv API_KEY "Zq8vLm2pXw"\nfastcgi_param DB_PASSWORD Zq8vLm2pXw;\n  uwsgi_param  APP_SECRET  "Zq8vLm2pXw";\nphp_admin_value mysql.default_password Zq8vLm2pXw\nenv[DB_PASSWORD] = Zq8vLm2pXw',
        'SetEnv DB_PASSWORD [REDACTED:assignment]\n    SetEnv API_KEY "[REDACTED:assignment]"\nfastcgi_param DB_PASSWORD [REDACTED:assignment];\n  uwsgi_param  APP_SECRET  "[REDACTED:assignment]";\nphp_admin_value mysql.default_password [REDACTED:assignment]\nenv[DB_PASSWORD] = [REDACTED:assignment]',
    ),
    (
        'ado-open',
        'conn.Open(dsn, "sa", "Zq8vLm2pXw")\ncn.Open "DSN=x", "sa", "Zq8vLm2pXw"\nconn.Open connStr, "sa", "Zq8vLm2pXw"',
        'conn.Open(dsn, "sa", "[REDACTED:code-literal]")\ncn.Open "DSN=x", "sa", "[REDACTED:code-literal]"\nconn.Open connStr, "sa", "[REDACTED:code-literal]"',
    ),
    (
        'spring-encoder-by-declaration',
        'PasswordEncoder encoder = new BCryptPasswordEncoder();\nboolean ok = encoder.matches("Zq8vLm2pXw", hash);\nval encoder: PasswordEncoder = BCryptPasswordEncoder()\nencoder.encode("Zq8vLm2pXw")\nencoder = new Argon2PasswordEncoder(16, 32, 1, 4096, 3);\nencoder.matches("Zq8vLm2pXw", h)',
        'PasswordEncoder encoder = new BCryptPasswordEncoder();\nboolean ok = encoder.matches("[REDACTED:code-literal]", hash);\nval encoder: PasswordEncoder = BCryptPasswordEncoder()\nencoder.encode("[REDACTED:code-literal]")\nencoder = new Argon2PasswordEncoder(16, 32, 1, 4096, 3);\nencoder.matches("[REDACTED:code-literal]", h)',
    ),
    (
        'password-check-without-declaration',
        'if (encoder.matches("Zq8vLm2pXw", user.getHash())) {\nassert pwEncoder.encode("Zq8vLm2pXw")\ncheck_password_hash(h, "Zq8vLm2pXw")\nok = pwd_context.verify("Zq8vLm2pXw", hashed)\nlet ok = bcrypt::verify("Zq8vLm2pXw", &hash)?;\nHash::check(\'Zq8vLm2pXw\', $user->password)\nhasher.VerifyHashedPassword(user, user.PasswordHash, "Zq8vLm2pXw")',
        'if (encoder.matches("[REDACTED:code-literal]", user.getHash())) {\nassert pwEncoder.encode("[REDACTED:code-literal]")\ncheck_password_hash(h, "[REDACTED:code-literal]")\nok = pwd_context.verify("[REDACTED:code-literal]", hashed)\nlet ok = bcrypt::verify("[REDACTED:code-literal]", &hash)?;\nHash::check(\'[REDACTED:code-literal]\', $user->password)\nhasher.VerifyHashedPassword(user, user.PasswordHash, "[REDACTED:code-literal]")',
    ),
    (
        'xhr-open-user-password',
        'http.Open "GET", "https://api.example.org/x", False, "admin", "Zq8vLm2pXw"\nobjHTTP.Open "POST", url, False, "svc_user", "Zq8vLm2pXw"\nxhr.open("GET", url, false, "alice", "Zq8vLm2pXw");\nreq.open(\'PUT\', \'/api\', true, user, \'Zq8vLm2pXw\');\nhttp.SetCredentials "admin", "Zq8vLm2pXw", 0',
        'http.Open "GET", "https://api.example.org/x", False, "admin", "[REDACTED:code-literal]"\nobjHTTP.Open "POST", url, False, "svc_user", "[REDACTED:code-literal]"\nxhr.open("GET", url, false, "alice", "[REDACTED:code-literal]");\nreq.open(\'PUT\', \'/api\', true, user, \'[REDACTED:code-literal]\');\nhttp.SetCredentials "admin", "[REDACTED:code-literal]", 0',
    ),
    (
        'xhr-open-long-url',  # the call's name 200+ characters before the password
        'xhr.open("GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", true, "alice", "Zq8vLm2pXw");\n'
        "req.open('POST', 'https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13', false, user, 'Zq8vLm2pXw');\n"
        'http.Open "GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", False, "admin", "Zq8vLm2pXw"\n'
        'xhr.open("GET", `${base}/https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13`, true, "alice", "Zq8vLm2pXw");\n'
        'conn.Open("Provider=SQLOLEDB.1;Persist Security Info=False;Data Source=DBSERVER01\\SQLEXPRESS;Initial Catalog=Inventory;Application Name=Reports;Workstation ID=OFFICE-PC-17;Packet Size=4096;Use Encryption for Data=False", "sa", "Zq8vLm2pXw")\n'
        'cn.Open "Provider=SQLOLEDB.1;Persist Security Info=False;Data Source=DBSERVER01\\SQLEXPRESS;Initial Catalog=Inventory;Application Name=Reports;Workstation ID=OFFICE-PC-17;Packet Size=4096;Use Encryption for Data=False", "sa", "Zq8vLm2pXw"',
        'xhr.open("GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", true, "alice", "[REDACTED:code-literal]");\n'
        "req.open('POST', 'https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13', false, user, '[REDACTED:code-literal]');\n"
        'http.Open "GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", False, "admin", "[REDACTED:code-literal]"\n'
        'xhr.open("GET", `${base}/https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13`, true, "alice", "[REDACTED:code-literal]");\n'
        'conn.Open("Provider=SQLOLEDB.1;Persist Security Info=False;Data Source=DBSERVER01\\SQLEXPRESS;Initial Catalog=Inventory;Application Name=Reports;Workstation ID=OFFICE-PC-17;Packet Size=4096;Use Encryption for Data=False", "sa", "[REDACTED:code-literal]")\n'
        'cn.Open "Provider=SQLOLEDB.1;Persist Security Info=False;Data Source=DBSERVER01\\SQLEXPRESS;Initial Catalog=Inventory;Application Name=Reports;Workstation ID=OFFICE-PC-17;Packet Size=4096;Use Encryption for Data=False", "sa", "[REDACTED:code-literal]"',
    ),
    (
        'constant-time-compare-whole-literal',  # the literal still goes where it is what is compared
        'hmac.compare_digest("Zq8vLm2pXw".encode(), key)\nhmac.compare_digest(key.encode(), "Zq8vLm2pXw".encode())\n'
        'hmac.compare_digest("Zq8vLm2pXw", "x" + token)\nhmac.compare_digest("sha256=" + x, sig) or hmac.compare_digest(token, "Zq8vLm2pXw")',
        'hmac.compare_digest("[REDACTED:code-literal]".encode(), key)\nhmac.compare_digest(key.encode(), "[REDACTED:code-literal]".encode())\n'
        'hmac.compare_digest("[REDACTED:code-literal]", "x" + token)\nhmac.compare_digest("sha256=" + x, sig) or hmac.compare_digest(token, "[REDACTED:code-literal]")',
    ),
    (
        'constant-time-compare-after-a-prefix',  # a prefix expression first: the literal second is still what is compared
        'hmac.compare_digest("sha256=" + x, "Zq8vLm2pXw")\nhmac.compare_digest(\'sha256=\' + expected, b\'Zq8vLm2pXw\')\n'
        'hmac.compare_digest("sha1=%s" % digest, "Zq8vLm2pXw")\nhmac.compare_digest("sha256=" + hmac.new(k, body, sha256).hexdigest(), "Zq8vLm2pXw")\n'
        'hmac.compare_digest(hmac.new(k, body, sha256).hexdigest(), "Zq8vLm2pXw")\nhmac.compare_digest("Zq8vLm2pXw", "sha256=" + x)\n'
        'subtle.ConstantTimeCompare([]byte("sha256="+hex.EncodeToString(mac.Sum(nil))), []byte("Zq8vLm2pXw"))\n'
        'subtle.ConstantTimeCompare([]byte("Zq8vLm2pXw"), []byte("sha256="+mac))\n'
        'crypto.timingSafeEqual(Buffer.from("sha256=" + digest), Buffer.from("Zq8vLm2pXw"))\ncrypto.timingSafeEqual(Buffer.from("Zq8vLm2pXw"), Buffer.from("sha256=" + digest))',
        'hmac.compare_digest("sha256=" + x, "[REDACTED:code-literal]")\nhmac.compare_digest(\'sha256=\' + expected, b\'[REDACTED:code-literal]\')\n'
        'hmac.compare_digest("sha1=%s" % digest, "[REDACTED:code-literal]")\nhmac.compare_digest("sha256=" + hmac.new(k, body, sha256).hexdigest(), "[REDACTED:code-literal]")\n'
        'hmac.compare_digest(hmac.new(k, body, sha256).hexdigest(), "[REDACTED:code-literal]")\nhmac.compare_digest("[REDACTED:code-literal]", "sha256=" + x)\n'
        'subtle.ConstantTimeCompare([]byte("sha256="+hex.EncodeToString(mac.Sum(nil))), []byte("[REDACTED:code-literal]"))\n'
        'subtle.ConstantTimeCompare([]byte("[REDACTED:code-literal]"), []byte("sha256="+mac))\n'
        'crypto.timingSafeEqual(Buffer.from("sha256=" + digest), Buffer.from("[REDACTED:code-literal]"))\ncrypto.timingSafeEqual(Buffer.from("[REDACTED:code-literal]"), Buffer.from("sha256=" + digest))',
    ),
    (
        'constant-time-compare-after-an-expression',  # an f-string, a bytes prefix, a formatted literal, a header looked up: the literal after goes
        'hmac.compare_digest(f"sha256={d}", "Zq8vLm2pXw")\nhmac.compare_digest(b"sha256=" + x, b"Zq8vLm2pXw")\n'
        'hmac.compare_digest("sha256={}".format(d), "Zq8vLm2pXw")\nhmac.compare_digest(request.headers["X-Hub-Signature-256"], "Zq8vLm2pXw")\n'
        "hmac.compare_digest(request.headers.get('X-Sig', '')[7:], 'Zq8vLm2pXw')",
        'hmac.compare_digest(f"sha256={d}", "[REDACTED:code-literal]")\nhmac.compare_digest(b"sha256=" + x, b"[REDACTED:code-literal]")\n'
        'hmac.compare_digest("sha256={}".format(d), "[REDACTED:code-literal]")\nhmac.compare_digest(request.headers["X-Hub-Signature-256"], "[REDACTED:code-literal]")\n'
        "hmac.compare_digest(request.headers.get('X-Sig', '')[7:], '[REDACTED:code-literal]')",
    ),
    (
        'prose-login-pairs',
        'Use admin:Zq8vLm2pXw! to log in\nlog in with admin / Zq8vLm2pXw\nuser/pass: admin/Zq8vLm2pXw\nUser/Pass: `admin` / `Zq8vLm2pXw`\nYou can sign in as bob:Zq8vLm2pXw now.\nTry root/Zq8vLm2pXw to login.\nusername/password: root/Zq8vLm2pXw',
        'Use admin:[REDACTED:prose-secret] to log in\nlog in with admin / [REDACTED:prose-secret]\nuser/pass: admin/[REDACTED:prose-secret]\nUser/Pass: `admin` / `[REDACTED:prose-secret]`\nYou can sign in as bob:[REDACTED:prose-secret] now.\nTry root/[REDACTED:prose-secret] to login.\nusername/password: root/[REDACTED:prose-secret]',
    ),
    (
        'slash-label-pairs-keep-the-user',  # the label's `password` was read as an assignment of the whole pair (or of its user alone)
        'Username/Password: admin / Zq8vLm2pXw\nusername/password: root:Tr0ub4dor3\nlogin/password = bob/hunter2x9\nUSER/PASSWORD=root/Zq8vLm2pXw\n'
        '"username/password": "root/Zq8vLm2pXw"\nUsername/Password: admin / hunter\nuser/pass: admin/hunter\nlogin/pw: bob/Zq8vLm2pXw, then Save\n'
        'Username / Password: admin / Zq8vLm2pXw\nUser / Pass: admin/Zq8vLm2pXw\nusername/password: "root" / "Zq8vLm2pXw"',
        'Username/Password: admin / [REDACTED:prose-secret]\nusername/password: root:[REDACTED:prose-secret]\nlogin/password = bob/[REDACTED:assignment]\n'
        'USER/PASSWORD=root/[REDACTED:assignment]\n"username/password": "root/[REDACTED:assignment]"\nUsername/Password: admin / [REDACTED:prose-secret]\n'
        'user/pass: admin/[REDACTED:prose-secret]\nlogin/pw: bob/[REDACTED:prose-secret], then Save\n'
        'Username / Password: admin / [REDACTED:prose-secret]\nUser / Pass: admin/[REDACTED:prose-secret]\nusername/password: "root" / "[REDACTED:prose-secret]"',
    ),
    (
        'slash-label-pairs-in-parentheses',  # a qualifier in parentheses names the pair: the user stays, the password goes
        'creds (user/pass): admin/Zq8vLm2pXw\nlogin (user/password): bob/Tr0ub4dor3\ncredentials (username / password) = root/Zq8vLm2pXw\n'
        'Admin account (Username/Password): admin / hunter\nDefault login (user/pw) = `root`/`Zq8vLm2pXw`\ncreds (user/pass) admin/Zq8vLm2pXw',
        'creds (user/pass): admin/[REDACTED:prose-secret]\nlogin (user/password): bob/[REDACTED:prose-secret]\ncredentials (username / password) = root/[REDACTED:prose-secret]\n'
        'Admin account (Username/Password): admin / [REDACTED:prose-secret]\nDefault login (user/pw) = `root`/`[REDACTED:prose-secret]`\ncreds (user/pass) admin/[REDACTED:prose-secret]',
    ),
    (
        'slash-label-pairs-bracketed-bold-dashed',  # brackets, Markdown bold, a dash after the parenthesis; `user/pass =`
        'creds [user/pass]: admin/Zq8vLm2pXw\n- **Credentials (user/password):** `admin` / `Zq8vLm2pXw`\n**Login (user/pass)**: bob/hunter\n'
        'Login (user / pass) - admin / Zq8vLm2pXw\nuser/pass = admin/Zq8vLm2pXw\nLogin/PW = bob/hunter',
        'creds [user/pass]: admin/[REDACTED:prose-secret]\n- **Credentials (user/password):** `admin` / `[REDACTED:prose-secret]`\n**Login (user/pass)**: bob/[REDACTED:prose-secret]\n'
        'Login (user / pass) - admin / [REDACTED:prose-secret]\nuser/pass = admin/[REDACTED:prose-secret]\nLogin/PW = bob/[REDACTED:prose-secret]',
    ),
    (
        'label-pairs-colon-comma-space',  # `(user:pass)` and `(username, password)` in brackets, the pair alike; `user/password: admin PW`
        'creds (user:pass): admin:Zq8vLm2pXw\nlogin (username, password): admin, Zq8vLm2pXw\nuser/password: admin Zq8vLm2pXw\n'
        'Credentials [Username:Password] = root:Tr0ub4dor3\n**Login (user, pass):** `bob`, `hunter2`\nUsername/Password: admin  Tr0ub4dor3x\n'
        '{"text": "user/password: root Zq8vLm2pXw\\nthanks"}',
        'creds (user:pass): admin:[REDACTED:prose-secret]\nlogin (username, password): admin, [REDACTED:prose-secret]\nuser/password: admin [REDACTED:prose-secret]\n'
        'Credentials [Username:Password] = root:[REDACTED:prose-secret]\n**Login (user, pass):** `bob`, `[REDACTED:prose-secret]`\nUsername/Password: admin  [REDACTED:prose-secret]\n'
        '{"text": "user/password: root [REDACTED:prose-secret]\\nthanks"}',
    ),
    (
        'slash-label-pairs-without-a-separator',  # the label, a space, the pair: a password mixing letters with digits or symbols goes
        'user/password root/Zq8vLm2pXw\nUsername/Password admin / Tr0ub4dor3\nthe default user/pass is set; user/pass admin:Zq8vLm2pXw works\n'
        'login/pw `bob`/`Zq8vLm2pXw`\n{"text": "user/password root/Zq8vLm2pXw\\nthanks"}',
        'user/password root/[REDACTED:prose-secret]\nUsername/Password admin / [REDACTED:prose-secret]\nthe default user/pass is set; user/pass admin:[REDACTED:prose-secret] works\n'
        'login/pw `bob`/`[REDACTED:prose-secret]`\n{"text": "user/password root/[REDACTED:prose-secret]\\nthanks"}',
    ),
    (
        'caddy-env-and-passenger',
        'example.com {\n\tphp_fastcgi localhost:9000 {\n\t\tenv DB_PASSWORD Zq8vLm2pXw\n\t\tenv APP_SECRET "Zq8vLm2pXw"\n\t}\n}\nenv API_TOKEN Zq8vLm2pXw\npassenger_env_var SECRET_KEY_BASE Zq8vLm2pXw;',
        'example.com {\n\tphp_fastcgi localhost:9000 {\n\t\tenv DB_PASSWORD [REDACTED:assignment]\n\t\tenv APP_SECRET "[REDACTED:assignment]"\n\t}\n}\nenv API_TOKEN [REDACTED:assignment]\npassenger_env_var SECRET_KEY_BASE [REDACTED:assignment];',
    ),
    (
        'secret-compared-to-literal',
        'if secret == "Zq8vLm2pXw":\nif (token === \'Zq8vLm2pXw\') {\nif api_key != "Zq8vLm2pXw":\nif (self.password == "Zq8vLm2pXw") return\nif (password.equals("Zq8vLm2pXw")) {\nif ("Zq8vLm2pXw".equals(user.getPassword())) {\nhmac.compare_digest(key, "Zq8vLm2pXw")',
        'if secret == "[REDACTED:assignment]":\nif (token === \'[REDACTED:assignment]\') {\nif api_key != "[REDACTED:assignment]":\nif (self.password == "[REDACTED:assignment]") return\nif (password.equals("[REDACTED:assignment]")) {\nif ("[REDACTED:assignment]".equals(user.getPassword())) {\nhmac.compare_digest(key, "[REDACTED:code-literal]")',
    ),
    (
        'literal-compared-to-secret',
        '"S3cr3tValue9" == secret\n\'tok_abc123def456\' === token\nif ("Zq8vLm2pXw" == password) {\nif "Zq8vLm2pXw" != self.api_key:\nif (\'Zq8vLm2pXw\' !== user.getPassword()) {\nhmac.compare_digest("S3cr3tValue9", key)\nsecrets.compare_digest(b"tok_abc123def456", token)\nsubtle.ConstantTimeCompare([]byte(token), []byte("S3cr3tValue9"))\nsubtle.ConstantTimeCompare([]byte("S3cr3tValue9"), []byte(token))\ncrypto.timingSafeEqual(Buffer.from(secret), Buffer.from("S3cr3tValue9"))\ncrypto.timingSafeEqual(Buffer.from(\'S3cr3tValue9\'), Buffer.from(secret))\ncrypto.createHmac(\'sha256\', Buffer.from(\'S3cr3tValue9\'))',
        '"[REDACTED:assignment]" == secret\n\'[REDACTED:assignment]\' === token\nif ("[REDACTED:assignment]" == password) {\nif "[REDACTED:assignment]" != self.api_key:\nif (\'[REDACTED:assignment]\' !== user.getPassword()) {\nhmac.compare_digest("[REDACTED:code-literal]", key)\nsecrets.compare_digest(b"[REDACTED:code-literal]", token)\nsubtle.ConstantTimeCompare([]byte(token), []byte("[REDACTED:code-literal]"))\nsubtle.ConstantTimeCompare([]byte("[REDACTED:code-literal]"), []byte(token))\ncrypto.timingSafeEqual(Buffer.from(secret), Buffer.from("[REDACTED:code-literal]"))\ncrypto.timingSafeEqual(Buffer.from(\'[REDACTED:code-literal]\'), Buffer.from(secret))\ncrypto.createHmac(\'sha256\', Buffer.from(\'[REDACTED:code-literal]\'))',
    ),
    (
        'cli-user-password-flags-more',
        "smbmap -H 10.0.0.5 -u alice -p Zq8vLm2pXw\nwinexe -U 'corp/alice%Zq8vLm2pXw' //10.0.0.5 cmd\nsmbget -U alice%Zq8vLm2pXw smb://host/share/f\nab -A alice:Zq8vLm2pXw http://x/\nhey -a alice:Zq8vLm2pXw http://x/\nhurl --user alice:Zq8vLm2pXw t.hurl\nwfuzz --basic alice:Zq8vLm2pXw -u http://x/FUZZ\nnikto -h x -id alice:Zq8vLm2pXw\ngobuster dir -u http://x -U alice -P Zq8vLm2pXw\nsqsh -S srv -U sa -P Zq8vLm2pXw\necho Zq8vLm2pXw | kinit alice@CORP.LOCAL",
        "smbmap -H 10.0.0.5 -u alice -p [REDACTED:cli-flag]\nwinexe -U 'corp/alice%[REDACTED:cli-flag]' //10.0.0.5 cmd\nsmbget -U alice%[REDACTED:cli-flag] smb://host/share/f\nab -A alice:[REDACTED:cli-flag] http://x/\nhey -a alice:[REDACTED:cli-flag] http://x/\nhurl --user alice:[REDACTED:cli-flag] t.hurl\nwfuzz --basic alice:[REDACTED:cli-flag] -u http://x/FUZZ\nnikto -h x -id alice:[REDACTED:cli-flag]\ngobuster dir -u http://x -U alice -P [REDACTED:cli-flag]\nsqsh -S srv -U sa -P [REDACTED:cli-flag]\necho [REDACTED:cli-flag] | kinit alice@CORP.LOCAL",
    ),
    (
        'php-connect-family',
        '$conn = sqlsrv_connect($server, array("Database" => "db", "UID" => "sa", "PWD" => "Zq8vLm2pXw"));\n$c = oci_connect(\'scott\', \'Zq8vLm2pXw\', \'db\');\n$c = odbc_connect($dsn, \'sa\', \'Zq8vLm2pXw\');\nldap_bind($ds, $dn, \'Zq8vLm2pXw\');\nssh2_auth_password($conn, \'bob\', \'Zq8vLm2pXw\');\n$mbox = imap_open(\'{imap.x:993/imap/ssl}INBOX\', \'bob\', \'Zq8vLm2pXw\');\nftp_login($conn, \'bob\', \'Zq8vLm2pXw\');',
        '$conn = sqlsrv_connect($server, array("Database" => "db", "UID" => "sa", "PWD" => "[REDACTED:assignment]"));\n$c = oci_connect(\'scott\', \'[REDACTED:code-literal]\', \'db\');\n$c = odbc_connect($dsn, \'sa\', \'[REDACTED:code-literal]\');\nldap_bind($ds, $dn, \'[REDACTED:code-literal]\');\nssh2_auth_password($conn, \'bob\', \'[REDACTED:code-literal]\');\n$mbox = imap_open(\'{imap.x:993/imap/ssl}INBOX\', \'bob\', \'[REDACTED:code-literal]\');\nftp_login($conn, \'bob\', \'[REDACTED:code-literal]\');',
    ),
    (
        'spring-noop-and-encoder-factories',
        'User.withUsername("user").password("{noop}Zq8vLm2pXw").roles("USER")\nspring.security.user.password={noop}Zq8vLm2pXw\nArgon2PasswordEncoder.defaultsForSpringSecurity_v5_8().encode("Zq8vLm2pXw")',
        'User.withUsername("user").password("[REDACTED:assignment]").roles("USER")\nspring.security.user.password={noop}[REDACTED:assignment]\nArgon2PasswordEncoder.defaultsForSpringSecurity_v5_8().encode("[REDACTED:code-literal]")',
    ),
    (
        'vpn-and-device-keys',
        ': PSK "Zq8vLm2pXw"\n%any %any : PSK \'Zq8vLm2pXw\'\ncarol : EAP "Zq8vLm2pXw"\n: XAUTH "Zq8vLm2pXw"\n@home.example.com : PSK 0sZq8vLm2pXwQ4rT7yU1iO\ncrypto isakmp key Zq8vLm2pXw address 0.0.0.0\n ikev1 pre-shared-key Zq8vLm2pXw\ntacacs-server key 7 Zq8vLm2pXw\nradius-server key Zq8vLm2pXw',
        ': PSK "[REDACTED:cli-flag]"\n%any %any : PSK \'[REDACTED:cli-flag]\'\ncarol : EAP "[REDACTED:cli-flag]"\n: XAUTH "[REDACTED:cli-flag]"\n@home.example.com : PSK [REDACTED:cli-flag]\ncrypto isakmp key [REDACTED:cli-flag] address 0.0.0.0\n ikev1 pre-shared-key [REDACTED:cli-flag]\ntacacs-server key 7 [REDACTED:cli-flag]\nradius-server key [REDACTED:cli-flag]',
    ),
    (
        'proxy-header-and-bundle-config',
        'proxy_set_header X-Api-Key Zq8vLm2pXw;\ngrpc_set_header X-Auth-Token Zq8vLm2pXw;\nbundle config --local gems.contribsys.com abcd1234:Zq8vLm2pXw\nbundle config set --global enterprise.contribsys.com abcd1234:Zq8vLm2pXw',
        'proxy_set_header X-Api-Key [REDACTED:assignment];\ngrpc_set_header X-Auth-Token [REDACTED:assignment];\nbundle config --local gems.contribsys.com abcd1234:[REDACTED:cli-flag]\nbundle config set --global enterprise.contribsys.com abcd1234:[REDACTED:cli-flag]',
    ),
    (
        'httpie-query-params',
        'http example.com api_key==Zq8vLm2pXw\nhttp GET api.x.com/v1 token==Zq8vLm2pXw page==2\nxh get api.x.com access_token==Zq8vLm2pXw limit==10',
        'http example.com api_key==[REDACTED:assignment]\nhttp GET api.x.com/v1 token==[REDACTED:assignment] page==2\nxh get api.x.com access_token==[REDACTED:assignment] limit==10',
    ),
    (
        'lisp-clojure-elixir-vim-bindings',
        '{:db {:user "bob" :password "Zq8vLm2pXw"}}\n(def api-key "Zq8vLm2pXwQ4")\n(setq gptel-api-key "Zq8vLm2pXwQ4")\n(setf *password* "Zq8vLm2pXw")\n  @api_key "Zq8vLm2pXwQ4"\nlet g:openai_api_key = "Zq8vLm2pXwQ4"',
        '{:db {:user "bob" :password "[REDACTED:assignment]"}}\n(def api-key "[REDACTED:assignment]")\n(setq gptel-api-key "[REDACTED:assignment]")\n(setf *password* "[REDACTED:assignment]")\n  @api_key "[REDACTED:assignment]"\nlet g:openai_api_key = "[REDACTED:assignment]"',
    ),
    (
        'infix-pairs',
        'mapOf("password" to "Zq8vLm2pXw")\nhashMapOf("api_key" to "Zq8vLm2pXwQ4")\nMap("db_password" -> "Zq8vLm2pXw")',
        'mapOf("password" to "[REDACTED:assignment]")\nhashMapOf("api_key" to "[REDACTED:assignment]")\nMap("db_password" -> "[REDACTED:assignment]")',
    ),
    (
        'provider-named-keys',
        'openai_key = "sk12Zq8vLm2pXwQ4rT7y"\nstripeKey: "Zq8vLm2pXwQ4"\nanthropic_key <- "Zq8vLm2pXwQ4rT7y"',
        'openai_key = "[REDACTED:assignment]"\nstripeKey: "[REDACTED:assignment]"\nanthropic_key <- "[REDACTED:assignment]"',
    ),
    (
        'label-pairs-comma-after-slash-label',  # a comma between the pair's halves after a slash label, bracketed or not
        'creds (user/pass): admin, S3cr3tPw9\ncreds [user/pass]: admin, Zq8vLm2pXw\n**Login (user/pass)**: bob, Zq8vLm2pXw\n'
        'creds (user/pass) admin, Zq8vLm2pXw\nuser/pass: admin, S3cr3tPw9\nusername/password: root,Tr0ub4dor3\n'
        '{"text": "creds (user/pass): admin, Zq8vLm2pXw\\nthanks"}',
        'creds (user/pass): admin, [REDACTED:prose-secret]\ncreds [user/pass]: admin, [REDACTED:prose-secret]\n**Login (user/pass)**: bob, [REDACTED:prose-secret]\n'
        'creds (user/pass) admin, [REDACTED:prose-secret]\nuser/pass: admin, [REDACTED:prose-secret]\nusername/password: root,[REDACTED:prose-secret]\n'
        '{"text": "creds (user/pass): admin, [REDACTED:prose-secret]\\nthanks"}',
    ),
    (
        'prose-secret-before-markup',  # a closing tag or a <br> right after the value is the element's, not the password's
        '<p>the password is S3cr3tPw9</p>\n<p>my password Zq8vLm2pXw</p> more\n<p>password is S3cr3tPw9<br>next</p>\n'
        '<td>the API key is sk9Zq8vLm2pXwQ4</td>\nthe token is Zq8vLm2pXw9</li></ul>',
        '<p>the password is [REDACTED:prose-secret]</p>\n<p>my password [REDACTED:prose-secret]</p> more\n<p>password is [REDACTED:prose-secret]<br>next</p>\n'
        '<td>the API key is [REDACTED:prose-secret]</td>\nthe token is [REDACTED:prose-secret]</li></ul>',
    ),
    (
        'prose-secret-before-an-escaped-break',  # a JSON string in text that is not JSON: its escaped line end ends the value
        'x "the password is S3cr3tPw9\\nfoo"\n<p>the password is Zq8vLm2pXw\\n</p>\nlog: "my token is Zq8vLm2pXw9QrT\\r\\nok"',
        'x "the password is [REDACTED:prose-secret]\\nfoo"\n<p>the password is [REDACTED:prose-secret]\\n</p>\nlog: "my token is [REDACTED:prose-secret]\\r\\nok"',
    ),
    (
        'slash-label-pairs-not-after-a-path-command',  # a label after prose or a label of its own is no command's path
        'creds: user/password root/Zq8vLm2pXw\nthe move: user/password root/Zq8vLm2pXw\nmvp user/password root/Zq8vLm2pXw\n'
        'movement user/password root/Zq8vLm2pXw',
        'creds: user/password root/[REDACTED:prose-secret]\nthe move: user/password root/[REDACTED:prose-secret]\nmvp user/password root/[REDACTED:prose-secret]\n'
        'movement user/password root/[REDACTED:prose-secret]',
    ),
    (
        'pgpass-in-a-json-string-in-text',  # a .pgpass line in a JSON string in text that is not JSON: at its start, after escaped breaks
        'x "db.example.com:5432:shop:app:S3cr3tPw9\\nfoo"\nlog: "first\\ndb.example.com:5432:shop:app:S3cr3tPw9\\nfoo"\n'
        'y "a\\nb\\nh.acme.io:5432:*:u:Zq8vLm2pXw" and z "\\n*:*:*:replicator:Tr0ub4dor3\\r\\nnext"\n'
        'dump \\"db.acme.io:6432:shop:app:Zq8vLm2pXw\\"\ndb.acme.io:5432:shop:app:pa\\:ss9word',
        'x "db.example.com:5432:shop:app:[REDACTED:pgpass-password]\\nfoo"\nlog: "first\\ndb.example.com:5432:shop:app:[REDACTED:pgpass-password]\\nfoo"\n'
        'y "a\\nb\\nh.acme.io:5432:*:u:[REDACTED:pgpass-password]" and z "\\n*:*:*:replicator:[REDACTED:pgpass-password]\\r\\nnext"\n'
        'dump \\"db.acme.io:6432:shop:app:[REDACTED:pgpass-password]\\"\ndb.acme.io:5432:shop:app:[REDACTED:pgpass-password]',
    ),
    (
        'pgpass-in-single-quotes',  # echoed or printf'd into ~/.pgpass: the quote opens the line, a `\n` in printf's format ends it
        "echo 'db.acme.io:5432:shop:app:S3cr3tPw9' >> ~/.pgpass\nprintf 'db.acme.io:5432:shop:app:Zq8vLm2pXw\\n*:*:*:rep:Tr0ub4dor3\\n' >> ~/.pgpass",
        "echo 'db.acme.io:5432:shop:app:[REDACTED:pgpass-password]' >> ~/.pgpass\n"
        "printf 'db.acme.io:5432:shop:app:[REDACTED:pgpass-password]\\n*:*:*:rep:[REDACTED:pgpass-password]\\n' >> ~/.pgpass",
    ),
    (
        'pgpass-markup-after-the-password',  # the tag and the escaped break after a line's last field stay
        '<b>h:5432:db:u:S3cr3tPw9\\n</b>\n<td>db.acme.io:5432:shop:app:Zq8vLm2pXw</td>\n<pre>db.acme.io:5432:shop:app:Zq8vLm2pXw\\r\\n</pre>',
        '<b>h:5432:db:u:[REDACTED:pgpass-password]\\n</b>\n<td>db.acme.io:5432:shop:app:[REDACTED:pgpass-password]</td>\n'
        '<pre>db.acme.io:5432:shop:app:[REDACTED:pgpass-password]\\r\\n</pre>',
    ),
    (
        'pgpass-password-running-into-more',  # on a real line, what follows a `\n` or a quote that is no markup may be the password's own: it goes too
        'db.acme.io:5432:shop:app:ab\\ncd9Xq\ndb.acme.io:5432:shop:app:ab"cd9Xq\nok',
        'db.acme.io:5432:shop:app:[REDACTED:pgpass-password]\ndb.acme.io:5432:shop:app:[REDACTED:pgpass-password]\nok',
    ),
    (
        'command-output-before-an-escaped-break',  # a JSON string in text that is not JSON: its escaped line end or quote ends the printed value
        'x "echo $DB_PASSWORD gives me S3cr3tPw9\\nok"\nlog: "printenv API_TOKEN prints Zq8vLm2pXw9QrT\\r\\nthanks"\n'
        'x "op read op://v/i/password gave Tr0ub4dor3\\tnext"\nx "echo $DB_PASSWORD gives me:\\nS3cr3tPw9\\nok"\n'
        'x "echo $DB_PASSWORD gives me \\"Zq8vLm2pXw\\"\\nok"\n<p>pass show db prints Zq8vLm2pXw</p>',
        'x "echo $DB_PASSWORD gives me [REDACTED:command-output]\\nok"\nlog: "printenv API_TOKEN prints [REDACTED:command-output]\\r\\nthanks"\n'
        'x "op read op://v/i/password gave [REDACTED:command-output]\\tnext"\nx "echo $DB_PASSWORD gives me:\\n[REDACTED:command-output]\\nok"\n'
        'x "echo $DB_PASSWORD gives me \\"[REDACTED:command-output]\\"\\nok"\n<p>pass show db prints [REDACTED:command-output]</p>',
    ),
    (
        'prose-secret-in-escaped-quotes',  # a JSON string's escaped quotes around the value
        'x "the password is \\"S3cr3tPw9\\"\\nok"\nx "my token is \\"Zq8vLm2pXw9QrT\\" thanks"',
        'x "the password is \\"[REDACTED:prose-secret]\\"\\nok"\nx "my token is \\"[REDACTED:prose-secret]\\" thanks"',
    ),
    (
        'trailing-bang-is-the-passwords',  # a `!` glued to a value is the password's own, in prose, a printer's output, a pair; a stop or `?` stays
        'the password is Hunter2!\nmy password Zq8vLm2p!! doesn\'t work\necho $DB_PASSWORD gives me S3cr3tPw9!\n'
        'user/password: admin/Tr0ub4dor3!\nlog in with admin / Xk9mPq2v!\nI\'ve set `DB_PASSWORD` to `Zq8vLm2p!`\n'
        'the password is Hunter2!.\nthe password is Hunter2.\nthe password is Hunter2?\nPasswort: Zq8vLm2p!',
        'the password is [REDACTED:prose-secret]\nmy password [REDACTED:prose-secret] doesn\'t work\necho $DB_PASSWORD gives me [REDACTED:command-output]\n'
        'user/password: admin/[REDACTED:prose-secret]\nlog in with admin / [REDACTED:prose-secret]\nI\'ve set `DB_PASSWORD` to `[REDACTED:prose-secret]`\n'
        'the password is [REDACTED:prose-secret].\nthe password is [REDACTED:prose-secret].\nthe password is [REDACTED:prose-secret]?\nPasswort: [REDACTED:prose-secret]',
    ),
    (
        'trailing-bang-in-commands-and-assignments',  # already whole: held here so that no rule starts cutting it
        'PASSWORD=Hunter2!\nexport DB_PASSWORD=Hunter2!!\nmysql -u root -pHunter2! db\npsql --password Hunter2! -h x\n'
        'curl -u bob:Hunter2! https://x\npostgres://bob:Hunter2!@db:5432/x\nredis-cli -a Hunter2! ping\necho h:5432:db:u:Hunter2! >> ~/.pgpass',
        'PASSWORD=[REDACTED:assignment]\nexport DB_PASSWORD=[REDACTED:assignment]\nmysql -u root -p[REDACTED:cli-flag] db\npsql --password [REDACTED:cli-flag] -h x\n'
        'curl -u bob:[REDACTED:cli-flag] https://x\npostgres://bob:[REDACTED:url-password]@db:5432/x\nredis-cli -a [REDACTED:cli-flag] ping\n'
        'echo h:5432:db:u:[REDACTED:pgpass-password] >> ~/.pgpass',
    ),
    (
        'lone-tag-after-a-value',  # an HTML element's opening tag with no closing one ends a value (never a generic's name)
        'DB_PASSWORD=Zq8vLm2pXw<br>\nexport API_KEY=Zq8vLm2pXw9QrT<span>\npassword: S3cr3tPw9<p>next\n'
        '<p>the password is Zq8vLm2pXw<span>next\necho $DB_PASSWORD gives me Tr0ub4dor3x<div class="x">',
        'DB_PASSWORD=[REDACTED:assignment]<br>\nexport API_KEY=[REDACTED:assignment]<span>\npassword: [REDACTED:assignment]<p>next\n'
        '<p>the password is [REDACTED:prose-secret]<span>next\necho $DB_PASSWORD gives me [REDACTED:command-output]<div class="x">',
    ),
    (
        'pgpass-line-as-a-command-argument',  # unquoted, on a command that names .pgpass or PGPASSFILE: echoed, printf'd, tee'd, in a JSON string
        "echo db.acme.io:5432:shop:app:S3cr3tPw9 >> ~/.pgpass\nprintf '%s\\n' db.acme.io:5432:shop:app:Zq8vLm2pXw > $PGPASSFILE\n"
        "echo localhost:*:*:postgres:Tr0ub4dor3 | tee -a ~/.pgpass && chmod 600 ~/.pgpass\n"
        '{"command": "echo h:5432:db:u:S3cr3tPw9 >> ~/.pgpass"}\nx "cd /tmp\\necho h:5432:db:u:Zq8vLm2pXw >> ~/.pgpass\\nls"\n'
        "export PGPASSFILE=/tmp/pgp; echo 10.0.0.5:6432:*:app:pa\\:ss9word > $PGPASSFILE\n"
        "echo h:5432:db:u:'P@ss w0rd' >> ~/.pgpass; tee -a ~/.pgpass <<< db.acme.io:5432:shop:app:Zq8vLm2pXw",
        "echo db.acme.io:5432:shop:app:[REDACTED:pgpass-password] >> ~/.pgpass\nprintf '%s\\n' db.acme.io:5432:shop:app:[REDACTED:pgpass-password] > $PGPASSFILE\n"
        "echo localhost:*:*:postgres:[REDACTED:pgpass-password] | tee -a ~/.pgpass && chmod 600 ~/.pgpass\n"
        '{"command": "echo h:5432:db:u:[REDACTED:pgpass-password] >> ~/.pgpass"}\nx "cd /tmp\\necho h:5432:db:u:[REDACTED:pgpass-password] >> ~/.pgpass\\nls"\n'
        "export PGPASSFILE=/tmp/pgp; echo 10.0.0.5:6432:*:app:[REDACTED:pgpass-password] > $PGPASSFILE\n"
        "echo h:5432:db:u:[REDACTED:pgpass-password] >> ~/.pgpass; tee -a ~/.pgpass <<< db.acme.io:5432:shop:app:[REDACTED:pgpass-password]",
    ),
    (
        'pgpass-line-written-to-a-variable-an-earlier-line-set',  # `F=~/.pgpass` on one line, `echo row >> $F` on a later one
        "F=~/.pgpass\necho db.acme.io:5432:shop:app:S3cr3tPw9 >> $F\n"
        'PGF="$HOME/.pgpass"; touch "$PGF"\necho localhost:*:*:postgres:Tr0ub4dor3 | tee -a "${PGF}"\n'
        '{"command": "OUT=~/.pgpass\\necho h.acme.io:5432:db:u:Zq8vLm2pXw >> \\"$OUT\\""}',
        "F=~/.pgpass\necho db.acme.io:5432:shop:app:[REDACTED:pgpass-password] >> $F\n"
        'PGF="$HOME/.pgpass"; touch "$PGF"\necho localhost:*:*:postgres:[REDACTED:pgpass-password] | tee -a "${PGF}"\n'
        '{"command": "OUT=~/.pgpass\\necho h.acme.io:5432:db:u:[REDACTED:pgpass-password] >> \\"$OUT\\""}',
    ),
    (
        'pgpass-password-as-a-printf-argument',  # the format's `%s` takes the password: the argument goes, the format stays
        "printf 'db.acme.io:5432:shop:app:%s\\n' S3cr3tPw9 >> ~/.pgpass\n"
        "printf '%s:%s:%s:%s:%s\\n' localhost 5432 shop app 'Tr0ub4 dor3' > $PGPASSFILE\n"
        'printf "h.acme.io:*:*:u:%s\\n" "Zq8vLm2pXw"\n'
        '{"command": "printf \'db.acme.io:6432:shop:app:%s\\\\n\' Zq8vLm2pXw >> ~/.pgpass"}',
        "printf 'db.acme.io:5432:shop:app:%s\\n' [REDACTED:pgpass-password] >> ~/.pgpass\n"
        "printf '%s:%s:%s:%s:%s\\n' localhost 5432 shop app [REDACTED:pgpass-password] > $PGPASSFILE\n"
        'printf "h.acme.io:*:*:u:%s\\n" [REDACTED:pgpass-password]\n'
        '{"command": "printf \'db.acme.io:6432:shop:app:%s\\\\n\' [REDACTED:pgpass-password] >> ~/.pgpass"}',
    ),
    (
        # A quoted password with an escaped quote in it (shell's '\'', SQL's and YAML's '', \",
        # PowerShell's `"): the value was read to the escape, and the rest stayed in clear.
        "quoted-value-with-an-escaped-quote",
        "psql --password 'iVa'\\''dTkw{J|u' -h db\n"
        "sshpass -p '[REDACTED:cli-flag]'\\''Kp9qZ3' ssh h\n"  # redacted before this rule: the rest goes
        'tool --password "h;CeP2yn\\"ESPR" -h db',
        "psql --password '[REDACTED:cli-flag]' -h db\n"
        "sshpass -p '[REDACTED:cli-flag]' ssh h\n"
        'tool --password "[REDACTED:cli-flag]" -h db',
    ),
    (
        # A generated password with shell or code punctuation in it, unquoted on a config line
        # (`.env`, YAML, an `export`): the value pattern stopped at the punctuation, and its tail
        # stayed in clear (`[REDACTED]&Kp9q`) or the whole read as code (`Xy7(Kp9q`, `Xy7<Kp9q`).
        "config-line-value-with-punctuation",
        "DB_PASSWORD=Xy7&Kp9q\nAPI_KEY=Ab12|Cd34Ef56\nSECRET_KEY=a1b2;c3d4e5\nDB_PASS=Xy7,Kp9q\n"
        "export TOKEN=Zq8(vLm2pXw\nAPI_TOKEN=Zq8)vLm2pXw\nDB_PASSWORD=Xy7[Kp9q\nDB_PASSWORD=Xy7]Kp9q\n"
        "DB_PASSWORD=Xy7{Kp9q\nDB_PASSWORD=Xy7}Kp9q\nDB_PASSWORD=x9<Qz7Kp2\nAPI_KEY=Zq8<9xY>Lm2\n"
        "DB_PASSWORD=abc>def123\npassword: Xy7=Kp9q\npassword: Xy7'Kp9q\nDB_PASSWORD=x9<cd>Qz7Kp2\n"
        'grep: {"out": "A=1\\nDB_PASSWORD=Xy7&Kp9q\\nNEXT=1"}\n'  # a transcript's escaped line
        "DB_PASSWORD=[REDACTED:assignment]&Kp9q\n"  # redacted before this rule: redacted again, the tail goes
        "AccountKey=Zq8vLm2pXw;EndpointSuffix=core.windows.net",  # another setting after the cut
        "DB_PASSWORD=[REDACTED:assignment]\nAPI_KEY=[REDACTED:assignment]\nSECRET_KEY=[REDACTED:assignment]\n"
        "DB_PASS=[REDACTED:assignment]\nexport TOKEN=[REDACTED:assignment]\nAPI_TOKEN=[REDACTED:assignment]\n"
        "DB_PASSWORD=[REDACTED:assignment]\nDB_PASSWORD=[REDACTED:assignment]\nDB_PASSWORD=[REDACTED:assignment]\n"
        "DB_PASSWORD=[REDACTED:assignment]\nDB_PASSWORD=[REDACTED:assignment]\nAPI_KEY=[REDACTED:assignment]\n"
        "DB_PASSWORD=[REDACTED:assignment]\npassword: [REDACTED:assignment]\npassword: [REDACTED:assignment]\n"
        "DB_PASSWORD=[REDACTED:assignment]\n"
        'grep: {"out": "A=1\\nDB_PASSWORD=[REDACTED:assignment]\\nNEXT=1"}\n'
        "DB_PASSWORD=[REDACTED:assignment]\n"
        "AccountKey=[REDACTED:assignment];EndpointSuffix=core.windows.net",
    ),
    # A secret in a spelling the rules do not read as typed (redact.py's "Views"): escaped more than
    # once, percent-encoded or as HTML entities, in look-alike characters, with invisible ones inside.
    # The marker takes the whole span the secret's characters came from; the rest stays as it was.
    ("escaped-three-times-json", "log: " + nested({"password": PW}, 3), "log: " + nested({"password": marker("assignment")}, 3)),
    ("escaped-five-times-json", "log: " + nested({"db": {"password": PW}}, 5), "log: " + nested({"db": {"password": marker("assignment")}}, 5)),
    (
        "escaped-three-times-sql",
        "log: " + nested({"q": f"INSERT INTO users (name, password) VALUES ('bob', '{PW}')"}, 3),
        "log: " + nested({"q": f"INSERT INTO users (name, password) VALUES ('bob', '{marker('sql-password')}')"}, 3),
    ),
    ("percent-encoded-env-line", f"https://x.example/?q=DB_PASSWORD%3D{PW}", "https://x.example/?q=DB_PASSWORD%3D[REDACTED:assignment]"),
    ("percent-encoded-form-body", f"body: password%3D{PW}%26user%3Dbob", "body: password%3D[REDACTED:assignment]%26user%3Dbob"),
    ("percent-encoded-json", f"data=%7B%22password%22%3A%22{PW}%22%7D", "data=%7B%22password%22%3A%22[REDACTED:assignment]%22%7D"),
    ("percent-encoded-twice", f"https://x.example/cb?state=password%253D{PW}", "https://x.example/cb?state=password%253D[REDACTED:assignment]"),
    ("percent-encoded-lower-case", f"q=db_password%3d{PW}", "q=db_password%3d[REDACTED:assignment]"),
    # (Lower case with no `%3d` near: inside a name, between two letters or digits.)
    (
        "percent-encoded-lower-case-name",
        f"q=api%5fkey=Zq8vLm2pXwQ4rT7yU1iO&a=1\nDB%5fPASS={PW}&x=1\nx-api%2dkey: Zq8vLm2pXwQ4rT7yU1iO",
        "q=api%5fkey=[REDACTED:assignment]&a=1\nDB%5fPASS=[REDACTED:assignment]&x=1\nx-api%2dkey: [REDACTED:assignment]",
    ),
    ("percent-encoded-header", "h=Authorization%3A%20Bearer%20Zq8vLm2pXwZq8vLm2pXwZq8vLm2pXw", "h=Authorization%3A%20Bearer%20[REDACTED:authorization]"),
    (
        "percent-encoded-sql",
        f"q=INSERT%20INTO%20users%20(name%2C%20password)%20VALUES%20('bob'%2C%20'{PW}')",
        "q=INSERT%20INTO%20users%20(name%2C%20password)%20VALUES%20('bob'%2C%20'[REDACTED:sql-password]')",
    ),
    ("html-entities-json", f"<pre>{{&quot;password&quot;: &quot;{PW}&quot;}}</pre>", "<pre>{&quot;password&quot;: &quot;[REDACTED:assignment]&quot;}</pre>"),
    ("html-entity-equals", f"password&#61;{PW}", "password&#61;[REDACTED:assignment]"),
    ("html-entities-twice", f"{{&amp;quot;password&amp;quot;: &amp;quot;{PW}&amp;quot;}}", "{&amp;quot;password&amp;quot;: &amp;quot;[REDACTED:assignment]&amp;quot;}"),
    ("full-width-equals", f"DB_PASSWORD\uff1d{PW}", "DB_PASSWORD\uff1d[REDACTED:assignment]"),
    ("full-width-quotes", f"{{\uff02password\uff02: \uff02{PW}\uff02}}", "{\uff02password\uff02: \uff02[REDACTED:assignment]\uff02}"),
    ("small-form-equals", f"API_KEY\ufe66{PW}", "API_KEY\ufe66[REDACTED:assignment]"),
    ("full-width-name", f"\uff24\uff22\uff3f\uff30\uff21\uff33\uff33\uff37\uff2f\uff32\uff24\uff1d{PW}", "\uff24\uff22\uff3f\uff30\uff21\uff33\uff33\uff37\uff2f\uff32\uff24\uff1d[REDACTED:assignment]"),
    ("full-width-token", "".join(chr(ord(c) + 0xFEE0) for c in GHP), "[REDACTED:github-token]"),
    ("math-letters-name", f"\U0001d429\U0001d41a\U0001d42c\U0001d42c\U0001d430\U0001d428\U0001d42b\U0001d41d={PW}", "\U0001d429\U0001d41a\U0001d42c\U0001d42c\U0001d430\U0001d428\U0001d42b\U0001d41d=[REDACTED:assignment]"),
    # "example" as a word of its own beside a random-looking part is a real value, no placeholder.
    (
        "example-word-beside-random-part",
        "DB_PASSWORD=prod-example-corp-8f7aQ2x9\nAPI_KEY=sk_test_example_8f7aQ2x9Zq\nSECRET=examples-Zq8vLm2pXwQ4",
        "DB_PASSWORD=[REDACTED:assignment]\nAPI_KEY=[REDACTED:assignment]\nSECRET=[REDACTED:assignment]",
    ),
    # Cyrillic and Greek letters that look Latin, in a word that mixes them with ASCII letters.
    ("other-script-cyrillic-name", f"\u0440\u0430ssword={PW}", "\u0440\u0430ssword=[REDACTED:assignment]"),
    ("other-script-greek-name", f"DB_P\u0391SSW\u039fRD={PW}", "DB_P\u0391SSW\u039fRD=[REDACTED:assignment]"),
    ("other-script-mostly-look-alike", "\u0405\u0415CR\u0415\u0422=Zq8vLm2pXwQ4rT7yU1iO", "\u0405\u0415CR\u0415\u0422=[REDACTED:assignment]"),
    ("other-script-in-json", f"{{'\u0440\u0430ssword': '{PW}'}}", "{'\u0440\u0430ssword': '[REDACTED:assignment]'}"),
    ("other-script-token", "gh\u0440_" + GHP[4:], "[REDACTED:github-token]"),
    ("modifier-colon", f"api_key\ua789 {PW}Zq8vLm2pXw", "api_key\ua789 [REDACTED:assignment]"),
    ("zero-width-space-in-token", f"token {GHP[:10]}\u200b{GHP[10:]} ok", "token [REDACTED:github-token] ok"),
    ("zero-width-non-joiner-in-token", f"key {ANTHROPIC[:17]}\u200c{ANTHROPIC[17:]} ok", "key [REDACTED:anthropic-key] ok"),
    ("word-joiner-in-aws-id", f"{AWS_ID[:4]}\u2060{AWS_ID[4:]} x", "[REDACTED:aws-access-key-id] x"),
    ("soft-hyphen-in-prefix", f"{GHP[:2]}\u00ad{GHP[2:]}", "[REDACTED:github-token]"),
    ("bom-in-token", f"\ufeff{GHP[:20]}\ufeff{GHP[20:]}", "\ufeff[REDACTED:github-token]"),
    ("zero-width-space-in-name", f"DB_PASS\u200bWORD={PW}", "DB_PASS\u200bWORD=[REDACTED:assignment]"),
    ("zero-width-space-after-every-character", "".join(c + "\u200b" for c in GHP), "[REDACTED:github-token]\u200b"),
    ("escaped-zero-width-space-in-token", f'log: "tok: {GHP[:6]}\\u200b{GHP[6:]}"', 'log: "tok: [REDACTED:github-token]"'),
    ("percent-encoded-with-zero-width-space", f"password%3D{PW[:3]}\u200b{PW[3:]}", "password%3D[REDACTED:assignment]"),
    # ... and their neighbours: other escapes, a name's or a token's own characters encoded, an
    # invisible character as an entity or as UTF-8 bytes, other spaces, combining marks.
    ("hex-escaped-json", f"{{\\x22password\\x22: \\x22{PW}\\x22}}", "{\\x22password\\x22: \\x22[REDACTED:assignment]\\x22}"),
    ("unicode-escaped-json", f"\\u0022password\\u0022: \\u0022{PW}\\u0022", "\\u0022password\\u0022: \\u0022[REDACTED:assignment]\\u0022"),
    ("percent-encoded-name-letter", f"pass%77ord={PW}", "pass%77ord=[REDACTED:assignment]"),
    ("percent-encoded-token-underscore", f"{GHP[:3]}%5F{GHP[4:]}", "[REDACTED:github-token]"),
    ("percent-encoded-zero-width-space", f"{GHP[:8]}%E2%80%8B{GHP[8:]}", "[REDACTED:github-token]"),
    ("percent-encoded-full-width-equals", f"DB_PASSWORD%EF%BC%9D{PW}", "DB_PASSWORD%EF%BC%9D[REDACTED:assignment]"),
    ("html-entity-zero-width-space", f"{GHP[:8]}&#8203;{GHP[8:]} and {GHP[:8]}&#x200B;{GHP[8:]} and {GHP[:8]}&ZeroWidthSpace;{GHP[8:]}",
     "[REDACTED:github-token] and [REDACTED:github-token] and [REDACTED:github-token]"),
    ("html-entity-underscore", f"ghp&lowbar;{GHP[4:]}", "[REDACTED:github-token]"),
    ("no-break-spaces-around-equals", f"DB_PASSWORD\u00a0=\u00a0{PW}", "DB_PASSWORD\u00a0=\u00a0[REDACTED:assignment]"),
    ("full-width-colon-and-ideographic-space", f"password\uff1a\u3000{PW}", "password\uff1a\u3000[REDACTED:assignment]"),
    ("combining-mark-in-prefix", f"gh\u0301p_{GHP[4:]}", "[REDACTED:github-token]"),
    ("variation-selector-in-token", f"{GHP[:8]}\ufe0f{GHP[8:]}", "[REDACTED:github-token]"),
    (
        "percent-encoded-in-a-long-output",  # read around the encoding, not the whole output again
        "line of output\n" * 500 + f"GET /cb?state=password%3D{PW}&x=1\n" + "more output\n" * 500,
        "line of output\n" * 500 + "GET /cb?state=password%3D[REDACTED:assignment]&x=1\n" + "more output\n" * 500,
    ),
    # SQL that stores a secret by column: the column list names it, the row holds it.
    ("sql-insert-values", "INSERT INTO users (name, password) VALUES ('bob', 'Xy7Kp9q!')", "INSERT INTO users (name, password) VALUES ('bob', '[REDACTED:sql-password]')"),
    (
        "sql-insert-rows",
        f"insert into accounts(email,api_token) values ('a@b.c','{PW}'),('c@d.e','Zq8Wn3vBx')",
        "insert into accounts(email,api_token) values ('a@b.c','[REDACTED:sql-password]'),('c@d.e','[REDACTED:sql-password]')",
    ),
    (
        "sql-insert-call-and-key",  # the literal in a call (not gen_salt's), and a key's
        f"INSERT INTO users (id, name, password, api_key) VALUES (1, 'bob', crypt('{PW}', gen_salt('bf')), 'Zq8Wn3vBxLmK9');",
        "INSERT INTO users (id, name, password, api_key) VALUES (1, 'bob', crypt('[REDACTED:sql-password]', gen_salt('bf')), '[REDACTED:sql-password]');",
    ),
    ("sql-insert-quoted-columns", f'insert into t (`user`, `pass`) values ("a", "{PW}")', 'insert into t (`user`, `pass`) values ("a", "[REDACTED:sql-password]")'),
    (
        "sql-insert-lines",
        f"INSERT INTO users (name, password)\n  VALUES\n  ('a', '{PW}'),\n  ('b', 'Zq8Wn3vB');",
        "INSERT INTO users (name, password)\n  VALUES\n  ('a', '[REDACTED:sql-password]'),\n  ('b', '[REDACTED:sql-password]');",
    ),
    (
        "sql-insert-without-column-list",  # the columns of the table's CREATE TABLE earlier in the text (pg_dump --inserts, mysqldump)
        "CREATE TABLE public.users (\n    id integer NOT NULL,\n    price numeric(10, 2),\n    password text,\n    PRIMARY KEY (id)\n);\n"
        f"INSERT INTO public.users VALUES (1, 1.50, '{PW}');\nINSERT INTO `users` VALUES (2,2.0,'{PW}'),(3,3.0,'hunter22');\n"
        f"INSERT INTO orders VALUES (1, 2.0, '{PW}');",
        "CREATE TABLE public.users (\n    id integer NOT NULL,\n    price numeric(10, 2),\n    password text,\n    PRIMARY KEY (id)\n);\n"
        "INSERT INTO public.users VALUES (1, 1.50, '[REDACTED:sql-password]');\nINSERT INTO `users` VALUES (2,2.0,'[REDACTED:sql-password]'),(3,3.0,'[REDACTED:sql-password]');\n"
        f"INSERT INTO orders VALUES (1, 2.0, '{PW}');",
    ),
    (
        "sql-hashing-call-under-secret-column",  # every literal of the call but an algorithm's name or a number
        f"UPDATE users SET password = crypt('{PW}', gen_salt('bf')) WHERE id = 1;\nUPDATE users SET password = MD5('hunter2');\n"
        f"SELECT 1 FROM users WHERE passwd = SHA2('{PW}', 256);\nUPDATE t SET api_key = pgp_sym_encrypt('Zq8vLm2pXwQ4', 'K3yZq8vLm2');\n"
        f"UPDATE u SET password_hash = HASHBYTES('SHA2_256', '{PW}')",
        "UPDATE users SET password = crypt('[REDACTED:sql-password]', gen_salt('bf')) WHERE id = 1;\nUPDATE users SET password = MD5('[REDACTED:sql-password]');\n"
        "SELECT 1 FROM users WHERE passwd = SHA2('[REDACTED:sql-password]', 256);\nUPDATE t SET api_key = pgp_sym_encrypt('[REDACTED:sql-password]', '[REDACTED:sql-password]');\n"
        "UPDATE u SET password_hash = HASHBYTES('SHA2_256', '[REDACTED:sql-password]')",
    ),
    (
        "crypt-call-literal",  # crypt(3) handed the password anywhere: pgcrypto, PHP, Python
        f"INSERT INTO users VALUES (1, 'bob', crypt('{PW}', gen_salt('bf')));\nh = crypt.crypt(\"{PW}\", crypt.mksalt())\n$h = crypt('{PW}', $salt);",
        "INSERT INTO users VALUES (1, 'bob', crypt('[REDACTED:code-literal]', gen_salt('bf')));\nh = crypt.crypt(\"[REDACTED:code-literal]\", crypt.mksalt())\n$h = crypt('[REDACTED:code-literal]', $salt);",
    ),
    ("sql-replace-into", f"REPLACE INTO users (name, password) VALUES ('bob', '{PW}')", "REPLACE INTO users (name, password) VALUES ('bob', '[REDACTED:sql-password]')"),
    ("sql-upsert-into", f"UPSERT INTO users (name, password) VALUES ('bob', '{PW}')", "UPSERT INTO users (name, password) VALUES ('bob', '[REDACTED:sql-password]')"),
    (
        "sql-insert-select",  # SELECT's list, up to FROM
        f"INSERT INTO users (name, password)\n  SELECT 'bob', '{PW}' FROM dual WHERE x = 'y';",
        "INSERT INTO users (name, password)\n  SELECT 'bob', '[REDACTED:sql-password]' FROM dual WHERE x = 'y';",
    ),
    (
        "sql-copy-from-stdin",  # pg_dump's rows: tab-separated fields; NULL (`\N`) and an empty field stay
        f"COPY public.users (id, email, password, api_token) FROM stdin;\n1\ta@b.c\t{PW}\t\\N\n2\tc@d.e\t\tZq8vLm2pXwZq8vLm2pXw\n\\.\n",
        "COPY public.users (id, email, password, api_token) FROM stdin;\n1\ta@b.c\t[REDACTED:sql-password]\t\\N\n"
        "2\tc@d.e\t\t[REDACTED:sql-password]\n\\.\n",
    ),
    (
        "secret-id-glued-to-an-assignment",  # the assignment's tail is not read on through the next marker
        "SecretID:     3f4a5b6c-1d2e-4f3a-8b9c-0d1e2f3a4b5cDB_PASSWORD='$uperS3cret!'",
        "SecretID:     [REDACTED:assignment]='[REDACTED:assignment]'",
    ),
    # A glued token with a long run after it (a path, more words): the bound is on the token's body now.
    ("glued-token-long-run-after", f"backup_{GHP}_" + "c" * 300, "backup_[REDACTED:github-token]_" + "c" * 300),
    ("glued-token-long-path-after", f"cp /tmp/backup_{GHP}/" + "d/" * 150 + "x.txt .", "cp /tmp/backup_[REDACTED:github-token]/" + "d/" * 150 + "x.txt ."),
    (
        # A password with punctuation, unquoted elsewhere than at a config line's start: a
        # connection string, prose, a label mid-line. The part before the punctuation went and
        # the rest stayed (`[REDACTED]&Kp9qZ3`), or all of it read as code (`x,QE6YqzSLW`).
        "mid-line-value-with-punctuation",
        "Server=db;Database=app;User Id=sa;Password=Xy7&Kp9qZ3;Encrypt=true\n"
        "the key passphrase: X&3kP9qLmZ\nAdmin password: Ab1;Cd2Ef3. Keep it safe.\n"
        "I set DB_PASSWORD=Xy7|Kp9qZ3 in the env file\nthe root password: x,QE6YqzSLW\n"
        "the passphrase: WFTD4vMdETBr(\nuser: admin password: qT5fKS(WaL33S host: db1",
        "Server=db;Database=app;User Id=sa;Password=[REDACTED:assignment];Encrypt=true\n"
        "the key passphrase: [REDACTED:assignment]\nAdmin password: [REDACTED:assignment]. Keep it safe.\n"
        "I set DB_PASSWORD=[REDACTED:assignment] in the env file\nthe root password: [REDACTED:assignment]\n"
        "the passphrase: [REDACTED:assignment](\nuser: admin password: [REDACTED:assignment] host: db1",
    ),
    (
        # A password that opens like a reference or a template (`$`, `%`, `{`) or holds braces
        # was taken for one and kept whole.
        "password-that-opens-like-a-template",
        '{"password": "$3pAAkVfTWs69"}\npassword = "%pS22tAGrpwqY"\nDB_PASSWORD="{s5mYpsoepjxh"\n'
        "<password>Bj4kJ{}LGVSm5</password>",
        '{"password": "[REDACTED:assignment]"}\npassword = "[REDACTED:assignment]"\nDB_PASSWORD="[REDACTED:assignment]"\n'
        "<password>[REDACTED:assignment]</password>",
    ),
    (
        # A quoted value turned down (a placeholder's word in it: `your`, `dummy`, `replace`)
        # covered its span, and a secret of the same rule inside it was never read.
        "turned-down-value-holds-a-secret",
        'CONNECTION_TOKEN="Server=db;User=your_user;Password=Xy7Kp9qLm1"\n'
        'KAFKA_SECRET="sasl.jaas.config=... username=dummy password=Xy7Kp9qLm1;"\n'
        "token: 'replace me; api_key=Zq8vLm2pXwQ4rT7yU1iO'",
        'CONNECTION_TOKEN="Server=db;User=your_user;Password=[REDACTED:assignment]"\n'
        'KAFKA_SECRET="sasl.jaas.config=... username=dummy password=[REDACTED:assignment];"\n'
        "token: 'replace me; api_key=[REDACTED:assignment]'",
    ),
    (
        # A password opening with punctuation the unquoted value cannot start with: no value was
        # read at all and the whole password stayed. And a YAML anchor before a value, which was
        # read as the value (a name: turned down) with the password after it in clear.
        "value-opening-with-punctuation",
        "DB_PASSWORD=&JUc8kP2xQz\nexport API_TOKEN=(d7uQm4LzW9xKp2R\n[db]\npassword = |g6vR2kHq9T\n"
        "  password: 'Xy7Kp9qZ3LmN\n- password: <Ab1Cd2Ef3Gh\nServer=db;Password=[Xy7Kp9qZ3;Encrypt=true\n"
        "password: ~Qz8Wv3Nn5Rt\ndb:\n  password: &db_pw Xy7Kp9qZ3LmN\n",
        "DB_PASSWORD=[REDACTED:assignment]\nexport API_TOKEN=[REDACTED:assignment]\n[db]\npassword = [REDACTED:assignment]\n"
        "  password: [REDACTED:assignment]\n- password: [REDACTED:assignment]\nServer=db;Password=[REDACTED:assignment];Encrypt=true\n"
        "password: [REDACTED:assignment]\ndb:\n  password: &db_pw [REDACTED:assignment]\n",
    ),
]

# Texts that must come back unchanged: training data loses more from mangling these than it gains.
NEGATIVE = [
    # `sk-ant-` inside a word glued by a letter, not a `_` or `-`: an identifier, not a key.
    ("glued-by-a-letter", "task-ant-colony-simulation-model-v2 and fetch_ghp_counts_for_repo2"),
    ("prose", "The tokenizer splits each key phrase; the password policy needs review."),
    ("git-sha", "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nAuthor: Dev <dev@example.org>"),
    ("uuid", "session 123e4567-e89b-12d3-a456-426614174000 started"),
    ("paths", "/home/dev/.ssh/id_rsa.pub /etc/ssl/private/server.key ~/.aws/credentials"),
    ("type-annotation", "def login(user: str, password: str) -> bool:"),
    ("typed-field", "    password: Optional[str] = None\n    token: str | None = None"),
    ("ts-type", "interface Cfg { apiKey: string; secret?: string }"),
    ("rust-type", "let token: Option<String> = None;"),
    ("check-password", "def check_password(password):\n    return verify(password)"),
    ("getpass-prompt", 'pw = getpass.getpass("Password: ")'),
    ("print-prompt", 'print("token: " + tok)'),
    ("self-ref", "self.token = token\ntoken = self.token"),
    ("env-lookup", 'api_key = os.environ["OPENAI_API_KEY"]\nsecret = os.getenv("SECRET")'),
    ("process-env", "const apiKey = process.env.OPENAI_API_KEY;"),
    ("call", "token = get_token()\npassword = getpass.getpass()"),
    ("kwargs-passthrough", "client = Client(password=password, token=tok, api_key=api_key)"),
    ("shell-pwd", "PWD=/home/dev/project\nOLDPWD=/tmp\nHOME=/home/dev"),
    ("sort-key", "sorted(items, key=lambda kv: kv[1])\ncache_key = f'user:{uid}'"),
    ("max-tokens", "max_tokens=1024, num_tokens: 77, tokens = tokenize(text)"),
    ("special-tokens", 'tokenizer.pad_token = tokenizer.eos_token\npad_token = "[PAD]"\n"eos_token": "</s>",'),
    ("placeholder-your", "OPENAI_API_KEY=YOUR_API_KEY\napi_key: your-api-key-here"),
    ("placeholder-angle", "GITHUB_TOKEN=<token>\npassword=<your password>"),
    ("placeholder-template", 'SECRET=${SECRET}\nTOKEN=$TOKEN\npassword: "{{ db_password }}"'),
    ("placeholder-mask", "password: ***\nAPI_KEY=xxxxxxxx\ntoken: '...'"),
    ("empty", 'PASSWORD=\nTOKEN=""\napi_key: \'\'\n'),
    ("null-values", '{"api_key": null, "token": None, "password": false}'),
    ("bearer-placeholder", 'curl -H "Authorization: Bearer $TOKEN" https://api.example.org'),
    ("bearer-fstring", 'headers = {"Authorization": f"Bearer {token}"}'),
    ("bearer-prose", "The Bearer authentication scheme uses a token: see RFC 6750."),
    ("secret-prose", "Token: The next step reads the secret: it is in the vault."),
    ("pem-parsing-code", 'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):\n    start = i\nelif line.startswith("-----END RSA PRIVATE KEY-----"):\n    end = i'),
    ("pem-marker-list", 'MARKERS = ["-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"]'),
    ("pem-prose", "A file that starts with -----BEGIN PRIVATE KEY----- is a PKCS#8 key."),
    ("public-key", 'public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx user@host"'),
    ("urls", "http://localhost:8080/api git@github.com:org/repo.git https://user@example.org/x"),
    ("kebab-words", "task-queue-worker-0123456789abcdef desk-lamp-2024-11-25-final-version-2"),
    ("snake-words", "test_functions_with_really_long_names_here_0123456789 _private_helper_function_name"),
    ("ls-listing", "-rw-r--r--  1 dev dev  4096 Nov 25 17:39 secrets.py\ndrwx------  2 dev dev  4096 Nov 25 .ssh"),
    ("comparison", 'if password == expected and token != "":'),
    ("existing-marker", "GITHUB_TOKEN=[REDACTED:github-token] and [REDACTED:assignment]"),
    ("short", "pw=x"),
    ("key-value-word", 'translation key: "greeting"\nmonkey = "banana"'),
    # Code that names secrets without holding one, found by running the module over site-packages.
    ("names-as-values", '"input_token": "next_token", "output_token": "marker",\nSECRET_KEY = \'AWS_SECRET_ACCESS_KEY\''),
    ("key-constants", 'CONTEXT_KEY = "RemoveImportsVisitor"\nSTATS_KEY = "_hypothesis_stats"\nEMRFS_KEY = \'fs.s3.consistent\''),
    ("arn", '"Resource": "arn:aws:secretsmanager:*:*:secret:greengrass-*",'),
    ("resource-type", '"AWS::SecretsManager::Secret": "c85175a4ebcce361",'),
    ("format-fields", 'f"{token:02x}" + f"{self.sequence_token:056d}"\npassword = f"{registry_id}-auth-token"'),
    ("docstrings", ":param password: The plaintext password.\n    password: The password part of the URL."),
    ("small-numbers", "ERRORTOKEN = 58\ntoken = 0\n'HAVE_STRUCT_PASSWD_PW_PASSWD': 1,"),
    ("variable-to-variable", "    cache_token = current_token\nself.username, self.password = credentials\nToken = Ignore + PlainToken"),
    ("kwargs-over-lines", "list_jobs(max_results=max_results,\n          next_token=previous_next_token\n)"),
    ("generic-words", "https://user:pass@host.example.org/ and https://username:password@host.com:80/"),
    ("masked-and-colors", 'password = ":****"\nToken: \'#ffffff\','),
    ("cli-prose", "log in with the --username and --password options of the CLI"),
    (
        "argv-others-short-flags",
        'subprocess.run(["mkdir", "-p", "build"])\nsubprocess.run(["ssh", "-p", "2222", "host"])\n'
        '["docker", "run", "-p", "8080:80", "img"]\n["mysql", "-u", "root", "-p", "shop"]\n["curl", "-u", "bob", url]',
    ),
    (
        "argv-parser-aliases",
        'parser.add_argument("--password", "-p", help="db password")\n@click.option("--token", "-t", envvar="TOKEN")\n'
        'flags = ["--password", "--user"]',
    ),
    (
        "argv-references",
        'subprocess.run(["sshpass", "-p", password, "ssh", host])\n["mysql", f"-p{pw}"]\n["tool", "--token", "$TOKEN"]\n'
        '["redis-cli", "-a", os.environ["REDIS_PW"]]',
    ),
    (
        "html-inputs",
        '<input type="password" name="pw" placeholder="Password">\n<input type="text" name="user" value="bob">\n'
        '<input type="password" value="">\n<input type="password" value={password} onChange={setPw} />\n'
        '<input type="password" value="{{ form.pw }}">\n<input type="hidden" name="next" value="/home">',
    ),
    (
        "password-markup-prose",
        '<label for="pw">Password</label>\n{"name": "password", "type": "string"}\n'
        '<property name="passwordEncoder" ref="bcrypt"/>',
    ),
    (
        "example-placeholders",
        "DB_PASSWORD=example-password-123\npassword: my-example-pass1\ntoken: example_token_abc123\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nAPI_KEY=your-example-key\nSECRET=example",
    ),
    (
        "private-key-and-default-words",
        "  private key: (hidden)\nPrivate key: /home/bob/.ssh/id_ed25519\nPrivate key: stored in the keychain\n"
        "The private key is generated locally\nBy default login with password is disabled\nx = d.setdefault login password foo",
    ),
    ("percent-lower-case-printf", 'printf("%s%2d x%5fy\\n", a, b); sprintf(buf, "id%2d", n); key = "%5f" % 3.14159'),
    (
        "other-script-words",
        "\u043f\u0430\u0440\u043e\u043b\u044c \u0445\u0440\u0430\u043d\u0438\u0442\u0441\u044f \u0432 Vault, token = self.token\n"
        "Python-\u0441\u043a\u0440\u0438\u043f\u0442 test_\u043f\u0440\u0438\u043c\u0435\u0440 = 1\n\u03b1\u03c1\u03b9\u03b8\u03bc\u03cc\u03c2 password = get_password()",
    ),
    (
        "positional-password-lookalikes",
        "htpasswd -c .htpasswd admin\nhtpasswd -D .htpasswd admin\nsqlplus / as sysdba\nsqlplus /nolog\nsqlplus scott@orcl\n"
        "net use Z: \\\\srv\\share /user:bob\nnet use \\\\srv\\share * /user:bob\nnet use Z: /delete",
    ),
    (
        "positional-lookalikes",
        "cargo login is how you log in\nvault login -method=github\nvault login -method github\nbw unlock --check\n"
        "bw unlock --passwordenv BW_PW\nrabbitmqctl list_users\nrabbitmqctl add_user creates a user\n"
        "poetry config http-basic.foo alice\ncargo login $CARGO_TOKEN\nbw unlock ${PW}\ncargo login <token>\n"
        "pulumi config set --secret dbConnection\npulumi config set region us-east-1\ngit config set user.name bob\n"
        '{"command": "rabbitmqctl add_user bob", "description": "Add user bob"}',
    ),
    (
        "auth-lookalikes",
        "AUTHORS\nAuthentication failed for user bob\nthe AUTH command takes a password\n250-AUTH PLAIN LOGIN\n"
        "250 AUTH LOGIN PLAIN\nAUTH LOGIN YWxpY2U=\n127.0.0.1:6379> AUTH $REDIS_PASSWORD\n(error) NOAUTH Authentication required.",
    ),
    ("cookie-prose", "The server sends a Set-Cookie header and the browser stores the cookie; see the Cookie: header."),
    ("document-cookie", 'document.cookie = "theme=dark; path=/";\nconsole.log("cookie:", document.cookie);'),
    ("set-cookie-no-value", "res.setHeader('Set-Cookie', cookie)\nSet-Cookie: <cookie-name>=<cookie-value>"),
    ("cookie-consent", "Cookie consent: we use cookies to improve your experience. Accept all cookies?"),
    ("cookie-map-lookalikes", "cookies = {}\ncookies = {'sid': '<your-session-id>'}\ncookies=dict(sid=SESSION)\n"
                              "we use cookies: {essential, analytics}\nmycookies = {'a': 'b1c2'}\ncookies = {\"sid\": os.environ[\"SID\"]}\n"
                              "cookies: { secure: true, sameSite: 'lax', path: '/', name: 'sid', max_age: '3600' }"),
    (
        "typed-references",
        'password: str = Field(..., min_length=8)\napi_key: str = settings.api_key\npassword: String = pw\n'
        'const token: string = await getToken();\ndef f(token: str = None, password: str = DEFAULT_PASSWORD): ...',
    ),
    ("ruby-symbols-as-code", 'validates :password, presence: true\n{ :token => token, :api_key => ENV["API_KEY"] }\nitems[:token_count]'),
    ("pwd-paths", 'volumes: { pwd: "/data/db" }\n{"pwd": "/home/dev/project"}'),
    ("sql-prose", "The regression identified by the nightly run is in the password reset flow.\nIDENTIFIED BY VALUES"),
    (
        "k8s-configmap-data",
        "apiVersion: v1\ndata:\n  LOG_LEVEL: info\nkind: ConfigMap\n---\napiVersion: v1\ndata:\n  retries: '3'\nkind: ConfigMap\n"
        "---\nkind: Secret\ntype: Opaque",
    ),
    ("signature-words", "?signature=abc&sig=1 inspect.signature(fn) def f(signature=None): X-Amz-SignedHeaders=host"),
    (
        "stdin-lookalikes",
        'cat <<EOF > notes.txt\nhello\nEOF\ndocker login -u bob --password-stdin <<< "$PW"\necho hunter2 | grep secret\n'
        'mysql -u root -p <<EOF\nSHOW DATABASES;\nEOF\nstd::cout << "token" << std::endl;',
    ),
    (
        "suffixed-name-lookalikes",
        "key1 = 'value1'\ntoken_2 = tokens[1]\nTOKEN_URL_2=https://example.com\npass2 = compile(tree)\nPASSWORD_2_HINT=x\n"
        "max_tokens_2 = 512\nsort_key_2: name\nCACHE_KEY_V2 = 'users'\npassword2 = forms.CharField(label='Confirm')\n"
        "SECRET_1: ${SECRET}\nKey1: Value1\nkey_new = old_key\nmonkey2 = 5\nbypass_2 = True\nAPI_KEY_PROD=your-api-key-here\n"
        "- name: CACHE_KEY_2\n  value: users",
    ),
    (
        "prose-command-output-lookalikes",
        "I ran op read op://dev/db/password and got an error: item not found\nop read op://dev/db/password returns nothing\n"
        "pass show email/gmail gave gpg: decryption failed\nvault kv get -field=password secret/db returns 403 Forbidden\n"
        "echo $HOME gives me /home/bob\nprintenv PATH outputs /usr/bin:/bin\npass the token through and get a new one\n"
        "gcloud auth print-access-token returns a short-lived token\necho hello prints x86_64\n"
        "aws configure get region returns eu-west-1\nbase64 -d blob.txt gives me hello123\n"
        "kubectl get pods | base64 --decode returns garbage like x9f2\n"
        "printenv DB_HOST prints db01x.internal\ncat README.md prints hello123 then exits\ngit branch -d feature and got error42x\n"
        "sops -d secrets.yaml shows the decrypted file\nopenssl rand -hex 16 | wc -c returns 33\nthe cache key returns v2_cache_x1\n"
        "dict.get(key) returns val123x\nprintenv API_KEY outputs nothing\nMAX_TOKENS prints 4096abc\nSOME_VALUE -> x1y2z3\n"
        "az keyvault secret show --name db shows the JSON\nkey=key=key prints abc123",
    ),
    (
        "store-and-dsn-lookalikes",
        "keyring.get_password('service', 'user')\nuser.set_password(raw)\naz keyvault secret show --name db\n"
        "mkdir -p build\nuseradd -m bob\nlog.info(\"%s@tcp(%s)\", user, host)\npass insert db\nSELECT password FROM users",
    ),
    (
        "directive-and-owned-lookalikes",
        "pdftk in.pdf output out.pdf user_pw PROMPT\nmkpasswd -s\nmkpasswd -m sha-512 -s < pw.txt\nqpdf --decrypt in.pdf out.pdf\n"
        # (A PassCmd or passwordeval that runs a command is no secret; nor a Pass that is a variable.)
        "IMAPAccount gmail\nUser me@gmail.com\nPassCmd \"pass show mail/gmail\"\n\nIMAPAccount x\nPass ${MAIL_PASSWORD}\n"
        "passwordeval \"gpg -q -d ~/.msmtp.gpg\"\nThe IMAPAccount section holds the Pass and PassCmd options.\n"
        "remotepassfile = ~/.offlineimap/pass\nremotepasseval = get_pass(\"work\")\n"
        "password required\npassword\npassword /etc/msmtp.pw\npassword hunter\nthe password field is required\n"
        "Your password must be 8 chars\nthe password reset_token expired\nenter the password 2 times\n"
        "$ terraform output instance_ip\n10.0.0.1",
    ),
    (
        "auth-call-lookalikes",
        "router.auth(\"basic\")\nBuffer.from('data:image/png;base64,iVBORw0KGgo=')\nbtoa('https://example.com/x')\n"
        "Buffer.from(str, 'base64')\nx.credentials(\"include\")\npassword: \"{{ user_password | password_hash('sha512') }}\"",
    ),
    (
        "bare-command-output-lookalikes",
        "op read op://dev/db/password\necho done\npass show email/gmail\nfi\nop read op://dev/db/password > /tmp/pw\nchmod600\n"
        "echo hello\nabc123def",
    ),
    (
        "hashing-key-and-pass-lookalikes",
        "ph.hash(password)\nh = argon2.hash(req.body.password)\ngraph.hash(\"node-1\")\nc = AES.new(key, AES.MODE_GCM)\n"
        "f = Fernet(Fernet.generate_key())\nnew TextEncoder().encode(\"hello\")\nhashlib.sha256(b\"hello\")\ncrypto.createHash(\"sha256\")\n"
        "EncodeToString([]byte(\"user:\" + pw))\nbase64_encode(\"hello world\")\nwpa_passphrase MyNet\nwpa_passphrase MyNet < pw.txt\n"
        "mysqladmin -u root -p password\nUse mysqladmin password to change it\nUSER=bob PASS=true\nuser: 3, pass: 12, fail: 0\n"
        "the credentials are stored in /etc/creds\nCredentials are read from ~/.aws/credentials\nkey := []byte(name)\n"
        "sort_key = []byte(\"name\")",
    ),
    (
        "hashing-and-passwd-lookalikes",
        "bcrypt.hash(password, 10)\nsudo passwd bob\nopenssl passwd -stdin\nthe passwd file\nman passwd 5\n"
        "oc get pods -p x\ncf push app -p ./build\nmosquitto_passwd -U passwd",
    ),
    (
        "powershell-lookalikes",
        '$s = ConvertTo-SecureString $encrypted\n$t = ConvertTo-SecureString "01000000d08c9ddf" -Key $key\n'
        "New-LocalUser -Name bob -Password $pw\nplink -P 22 bob@host\ndotnet run -p src/App\nxfreerdp /v:host /p:$PW",
    ),
    ("dollar-lookalikes", "awk '{print $1$2$3$4$5$6}' file\necho $1$HOME costs $5$ 10\nPS1='$6$USER'"),
    ("cookie-jar-file", "curl -b cookies.txt -c cookies.txt https://x\nSet-Cookie: sid=${SID}; Path=/"),    (
        "mail-lookalikes",
        "vault login -method github\nnpm login --registry x\n--- PASS: TestLogin (0.00s)\nPASS src/app.test.js\n"
        "PASS tests/test_auth.py::test_login\nuser = User(name)\npass\nheroku login -i",
    ),
    (
        "code-literal-lookalikes",
        'jwt.sign(payload, secret)\njwt.sign(payload, process.env.JWT_SECRET)\njwt.decode(tok, options={"verify_signature": False})\n'
        "jwt.sign(payload, 'secret')\nhmac.new(key, msg, hashlib.sha256)\ncrypto.createHmac('sha256', key)\n"
        "client.login(username, password)\nself.login('alice', pw)\nfn.bind(this, 'click')\n"
        "s.encode('utf-8')\nbody.decode(\"utf-8\")\njson.decode(data, 'strict')",
    ),
    (
        "terraform-lookalikes",
        'variable "region" {\n  default = "us-east-1"\n}\nvariable "db_password" {\n  type = string\n}\n'
        'variable "api_token" {\n  default = ""\n}',
    ),
    ("ldap-lookalikes", "# bindpw is read from /etc/ldap.secret\nrootpw {SSHA}\nuserPassword: <hash>"),
    (
        "powershell-lookalikes",
        "[System.Environment]::GetEnvironmentVariable('DB_PASSWORD', 'User')\nPS C:\\> $env:PATH\nC:\\Windows\n"
        "C:\\src>type README.md\n# Title\nName  Value\n----  -----\nPath  C:\\x",
    ),
    (
        "rclone-and-pass-lookalikes",
        "rclone config create mysftp sftp host example.com user bob\nrclone config show\nrclone copy src remote:dst --progress\n"
        "rclone config create s3 s3 provider AWS env_auth true\npass = pass + 1\npass = getPass()\n  pass: compile\npass = true\n"
        "    pass = lowering",
    ),
    (
        "connection-and-scheme-lookalikes",
        "c = Connection('web1', 'deploy', 22)\nconn = sqlite3.Connection(\"file.db\")\nc = Connection(host, user, port)\n"
        'adminPassword: "{password}"\nolcRootPW: {SSHA}\nprint(f"{SSHA}{digest}")\ntemplate = "{PLAIN}"',
    ),
    (
        "store-and-block-lookalikes",
        "description: |\n  some text\n  more\nconsul kv put app/config/region eu\n"
        "aws ssm put-parameter --name /app/region --value eu-west-1\nnet user bob /add\nnet user",
    ),
    (
        "setter-lookalikes",
        "ds.setPassword(password);\ncfg.setToken(System.getenv(\"TOKEN\"));\nlexer.token(\"if\")\n"
        "b.withSecret(secretRef)\nuser.getPassword()\nform.password(\"\")",
    ),
    (
        "prose-lookalikes",
        "if token is None:\nthe password is stored in Vault\nThe API key is read from .env at start-up.\n"
        "password is required (min 8 chars)\ntoken is tokenizer.eos_token\nThe token is then passed to the client.\n"
        "password was reset for bob@x.com\nthe secret is in config/secrets.yml\ntoken: Optional[str] = None\n"
        'raise ValueError("no padding token is defined.")\n# the next token is re-processing it\n'
        # (A bare word is prose, or a letters-only password: a known limit; quoted, it goes.)
        "the password is swordfish\nthe password is too short\npassword is incorrect\npassword for user is incorrect\n"
        'the password is "required"\nuse password reset to recover\nlogin as user/pass\nlogin with bob/alice\n'
        'Error: the password is "invalid"\nthe token is "expired"\nthe secret is \'missing\'\n'
        "login to src/app1 now\nsee login/logout flow\nlogin: admin / ${ADMIN_PW}\nthe pw is stored in 1Password",
    ),
    (
        "credential-call-lookalikes",
        "new PDO($dsn, $user, $pass)\nmysqli_connect($host, $user, $pw, $db)\nNetworkCredential(user, pw)\n"
        "DriverManager.getConnection(url, props)\nftp = FTP(host)\nFTP('ftp.example.com', 'anonymous', '')\n"
        "pymysql.connect(host, user, pw, 'inventory')\nsqlite3.connect('x.db', 5.0, 'DEFERRED', 'check')\n"
        "client.connect(host, port, user, password)\nf.Open('report.txt', 'r', 'utf-8')",
    ),
    (
        "terminal-lookalikes",
        "$ pass ls\nPassword Store\n└── email\n$ echo $HOME\n/home/dev\n$ pass show x | wc -c\n13\n"
        "# pass the token through\nrun(token)\n<bash-input>ls</bash-input><bash-stdout>a.txt</bash-stdout>",
    ),
    (
        "escaped-terminal-lookalikes",  # escaped in a JSON string: no printer, a prompt mid-line, no output, `\\n` no line break
        's.jsonl:{"content": "$ pass ls\\nPassword Store\\n$ pass show x | wc -c\\n13\\n$ cat notes.txt\\nalice\\nTr0ub4dor3xq"}\n'
        'print("usage: $ pass show NAME\\nprints the entry")\nprintf("$ pass show %s\\n", name);\nRE = "$ pass show x\\\\nTr0ub4dor3xq"',
    ),
    (
        'authorization-words',
        'security:\n  authorization: enabled\nAuthorization: see the docs below\n"Authorization": "Bearer " + token\nAuthorization: Bearer ${TOKEN}\nauthorization: {type: oauth2}\nX-Authorization: required-header-name\nthe Authorization: header is required',
    ),
    (
        'header-key-lookalikes',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nIdempotency-Key: 8e03978e-40d5-43e8-bc93-6894a57f9324\ncache-key: v1-deps-abc123\nPrimary-Key: user_id\nForeign-Key: fk_123',
    ),
    (
        'cli-user-then-p-lookalikes',
        "docker run -u root -p 8080:80 nginx\nps -u bob -p 1234,5678\ngunicorn -u www -p /run/app.pid app:app\nvim -u vimrc -p a.txt b.txt\npython -u app.py -p prod\nsudo -u postgres -p 'pw for %u: ' psql\nlsof -u bob -p 123\nab -u put.json -p post.json http://x\npsql -U postgres -p 5432\niperf3 -c h -u -p 5201\nrsync -u -p src dst\ntool -u admin -p $PASSWORD\npodman pull --creds bob quay.io/x\ninflux query -t $TOKEN\necho hi | cat /dev/stdin\ngh auth login --with-token < token.txt",
    ),
    (
        'code-secret-lookalikes-more',
        'WeightRenaming("a.cls_token", "b.token")\nrename("model.embed.password", "model.x.pw")\n("user", "password", "host")\n${DB_PASSWORD:?must be set}\n${PW:+--password=$PW}\n${DB_PASSWORD:-}\n${TOKEN_FILE:-/run/secrets/token}\n${SORT_KEY:-name}\n${API_KEY:-your-api-key}\n{{ .Values.image.tag | default "latest" }}\n{{ .Values.auth.existingSecret | default "" }}\n${PASSWORD_MIN_LENGTH:-8}\ntoken = token or "anonymous"\npassword = password or ""\nif token == "x" or "y":\ntoken: a string or "none"\nkey = key || "id"\napi_key = os.getenv("API_KEY") or "YOUR_API_KEY"\nconst secret = opts.secret || "";\npassword_field = form.password or "password"\ntokenizer = tok or "gpt2"\npassword: String::from("")\n#define PASSWORD_PROMPT "Password: "\n#define TOKEN_HEADER "X-Token"\nvar token string = ""\n#define API_KEY_ENV "API_KEY"\nchar key[] = "name";\n#define MAX_PASSWORD_LEN 64\nDim token As String = GetToken()',
    ),
    (
        'typing-and-echo-lookalikes',
        'await page.fill("#password", password)\nhash_password(user, "sha256")\nexpect(page.locator("#password")).toHaveValue(user.pw)\ncy.get("#password").type("{enter}")\npage.fill("#password", process.env.PW)\npassword.type("text")\necho $TOKEN > token\necho "" > token\necho "building" > build.token\necho done > password_reset.log\necho hello > key.txt\necho 5 > /sys/class/x/pass\necho Zq8vLm2pXw > keys/public_key',
    ),
    (
        'braces-tags-quotes-lookalikes',
        'conn = f"DRIVER={{ODBC}};UID={user};PWD={password}"\nconn = f"DRIVER={{ODBC}};UID={user};PWD={db_password};"\n<Input password={password} />\n<Input apiKey={process.env.KEY} />\npassword={pw!r}\ntoken={tok:>8}\npassword: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  66383439383437366338\nMasterUserPassword: !Ref DbPassword\nApiKey: !GetAtt Key.Value\nwifi_password: !secret wifi_password\ngetpass("Password: ")\nmsg = \'Enter password: "\'\nlog(\'token="%s"\' % tok)\nssh://git@github.com/x\nhttps://jane-doe-from-accounting@bitbucket.org/x\nhttps://deploy-bot-account-2024@host/x',
    ),
    (
        'xml-and-prose-lookalikes-more',
        '<string name="password">Passwort</string>\n<string name="password">Mot de passe</string>\n<string name="token_expired">Your session expired</string>\n<property name="hibernate.connection.password">${db.pw}</property>\n<key>NSFaceIDUsageDescription</key><string>x</string>\n<key>API_KEY</key>\n<string>$(API_KEY)</string>\n<string name="api_key">google_maps_key</string>\ncrypto.createCipheriv("aes-256-gcm", key, iv)\nCryptoJS.AES.encrypt("hello", key)\nthe password for user is incorrect\nthe password for the admin account is stored in vault\nset the password `password_hash` field\nthe token `access_token` is returned\nthe password `${DB_PASSWORD}`\nthe token field `expires_in`\npassword `********`',
    ),
    (
        'prose-to-lookalikes',
        'the token to use\npassword to access the db\npass the token to getUser()\nconvert the token to base64url\nhash the password to sha256x\nthe secret to success is hard work\ndocker run -u root -p 8080:80 nginx',
    ),
    (
        'oracle-and-oauth-lookalikes',
        'jdbc:oracle:thin:@//host:1521/svc\nuserid=/ as sysdba\nuserid=scott/$PW\n"x" | ConvertTo-SecureString\nhttps://${TOKEN}:x-oauth-basic@github.com',
    ),
    (
        'provider-prefix-lookalikes',
        'fw_version_string_abcdefghijklmnop re_compile_patterns_x sq_u ATBBQ web-xoxd-test phc_public',
    ),
    (
        'user-and-key-lookalikes',
        '{"key": "value", "username": "x"}\n{"username": "bob", "key": "name"}\n{"user": "bob", "key": "sort_order"}',
    ),
    (
        'wallet-lookalikes',
        'tx hash: 0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318\n"blockHash": "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"\nkeccak256("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")\nSEED_SALT = 0x9E3779B1\nphrase = "hello world"\nkey_words = ["a", "b"]',
    ),
    (
        'device-and-pipe-lookalikes',
        'echo hi | grep passwd\nyes | apt install x\necho done | tee passwd.log\necho y | cat /etc/passwd\nset the password "required"\npassword 0 errors\nthe secret 7 times\nreset password 0 times\nuser bob password "${PW}"\nfield password "string"\nx = a || token=5',
    ),
    (
        'diff-line-lookalikes',
        '-e mysql -p db\n-p 8080:80 \\\n  -u root\n+mkdir -p build/out',
    ),
    (
        'arrows-dumps-tables-lookalikes',
        '  ~ name = "a" -> "b"\nx -> "y"\n| PASSWORD | The database password |\n| password | yes |\n| col | foo |\n| API_KEY | `your-key` |\n| secret_key | ${SECRET} |\necho hi | grep token\ncat x | head -n 5\nls | password_filter\narray(1) {\n  ["name"]=>\n  string(3) "bob"\n}',
    ),
    (
        'url-query-lookalikes',
        'https://x/?sort=asc&key=name\nhttps://x/?key=value\nhttps://x/?key=id_123\na?auth=basic',
    ),
    (
        'dollar-references',
        'PASSWORD=$HOME/.pw\npassword: ${DB_PASSWORD}\npassword=$(cat /run/secrets/pw)\ntoken: $TOKEN\npw=$1\npassword = $password;\n$password = $_POST["password"];',
    ),
    (
        'narration-lookalikes',
        'Pass `token` to `fetchUser`\nAdd `API_KEY` to `.env`\nAdd API_KEY to config.py\n`API_KEY` is required\n`DB_PASSWORD` is now set\nset `DB_PASSWORD` to `${PW}`\n`SECRET_KEY` was rotated\nThe apiKey is now stored\nSet API_KEY to your key\n- **Password**: required\n**Token:** see below\ntoken -> user_id\nusing token auth\nwith token expiry of 5m',
    ),
    (
        'curl-user-lookalikes',
        'curl -u bob: https://x\ncurl -u admin: https://x',
    ),
    (
        'plain-credential-lookalikes',
        'auth: required\nauth: host:8080\nauth: "oauth2"\nauth: bob:${PW}\nbasic_auth: true\nident: x',
    ),
    (
        'sql-secret-lookalikes',
        "DROP SECRET 'name'\nCREATE SECRET my_secret\nSECRET 'x'",
    ),
    (
        'positional-more-lookalikes',
        'gh auth login\nsnyk auth\nthe auth module is here',
    ),
    (
        'cli-key-file-flags',
        'cosign sign --signing-key ./keys/release.pem img\nssh-x --private-key ~/.ssh/id_ed25519\nx --encryption-key key.json',
    ),
    (
        'pentest-lookalikes',
        '[+] Done\n[+] C:\\Users\\x: ok\n[+] Building wheel for x: finished',
    ),
    (
        'bundler-settings',
        'BUNDLE_PATH=vendor/bundle\nBUNDLE_BUILD__NOKOGIRI=--use-system-libraries\nBUNDLE_GEMS__CONTRIBSYS__COM=${SIDEKIQ_CREDS}',
    ),
    (
        'fp-diff-finds',
        'SSH endpoint of the Job, e.g. `"ssh://687fb701029421ae5549d998@ssh.hf.jobs"`.\nBy default, if the check succeeds, the token *must* be read before\nthe token _must_ match',
    ),
    (
        'assembler-mnemonics',
        'mnemonic = "PUSH"\nmnemonic: mov\ninstr.mnemonic = "JMP"',
    ),
    (
        'net-use-and-encrypt-lookalikes',
        'net use Z: \\\\srv\\share /user:admin *\nansible-vault encrypt_string --stdin-name db_pw\nencrypt_string foo\nansible-vault encrypt_string "$PW" --name x',
    ),
    (
        'server-setup-lookalikes',
        'the password (optional) field\nAPI key (see below)\npassword (min 8 chars)\nthe token (access_token) expires\npassword set to expire\nthe password is set to expire\nPASSWORD user = $X',
    ),
    (
        'redis-acl-lookalikes',
        'ACL SETUSER alice reset\nACL SETUSER bob on ~* +@all',
    ),
    (
        'dsl-lookalikes',
        'the token "abc123" is\n  token "abc123" if x\nputs password "x"\n  password ""\nbuildConfigField "String", "BASE_URL", "\\"https://x\\""\nbuildConfigField "String", "API_KEY", "\\"${apiKey}\\""\nf("a", "token", "abc")',
    ),
    (
        'pdftk-input-prompt',
        'pdftk secured.pdf input_pw PROMPT output x.pdf',
    ),
    (
        'foreign-password-lookalikes',
        'Passwort: vergessen\n密码：请输入\nKennwort: ${PW}\nparola: ciao\nsenha: obrigatória\nпароль: неверный',
    ),
    (
        'foreign-password-sentence-and-name-lookalikes',
        'Das Passwort ist falsch\nla contraseña es incorrecta\nLe mot de passe est trop court\nDas Passwort ist 8 Zeichen lang\n'
        'Kennwort ist $DB_PASS\nmot de passe est <votre-mot-de-passe>\nDas Passwort ist https://x.io/reset\n'
        'passwort = eingabe()\npasswort = os.environ["PW"]\n"passwort": "${PASSWORT}"\nKennwort: !vault |\n'
        'resenha = "ótima"\nimpasse=deadlock\npasse = True',
    ),
    (
        'jjwt-and-setter-lookalikes',
        'Keys.hmacShaKeyFor(secret.getBytes())\nFoo::setPassword($pw)',
    ),
    (
        'bare-output-more-lookalikes',
        'heroku auth:token\nfoo bar\nbw get password github\nNot found.',
    ),
    (
        'impacket-lookalikes',
        'docker pull library/nginx:1.25@sha256:abcdef0123456789\nghcr.io/org/app:v1.2.3@sha256:0123\ngit show HEAD@{1}\nemail alice@example.com about a/b:c\npython train.py configs/model:large\nGetUserSPNs.py -no-pass corp.local/alice -k\nsee https://host/path/u:p@x',
    ),
    (
        'httpie-prompts',
        'http -a alice example.com\nhttp -A digest -a alice example.com\nhttp -a alice: example.com\nhttp -a bob pie.dev/basic-auth/bob',
    ),
    (
        'git-config-lookalikes',
        'git config --global user.signingkey 3AA5C34371567BD2\ngit config --get github.token\ngit config --unset hub.oauthtoken\ngit config --global credential.helper store\ngit config github.token "$GITHUB_TOKEN"\nthe token is here',
    ),
    (
        'r-assignment-lookalikes',
        'token <- Sys.getenv("GITHUB_TOKEN")\npassword <- askpass::askpass()\nx <- password\nif (a <-1) b\nURL_PAT = "[a-z]+://\\\\S+"\nkey <- "a"',
    ),
    (
        'api-client-lookalikes',
        'c = Client("localhost", "x")\nconst o = new Octokit({ auth: "token" })\nconst stripe = Stripe(\'pk_test_abcdef0123456789\')\ng = Github(token)\nclient = WebClient(token=os.environ["SLACK_TOKEN"])\nconst o = new Octokit({ auth: process.env.GH_TOKEN })',
    ),
    (
        'cookie-signing-lookalikes',
        "app.use(cookieParser())\napp.use(cookieParser(process.env.COOKIE_SECRET))\nshortcut = { keys: ['ctrl', 'shift'] }\nObject.keys(['abcd'])\napp.keys = [process.env.K1]\nconst encoder = new TextEncoder()",
    ),
    (
        'credentials-lookalikes',
        'credentials: user:password\ncredentials: see https://x\nLast login: Sat Dec  5 21:57:36 2026 from 10.0.0.1\ncredentials: aws:default\nlogin 10:30am\nthe credentials file: ~/.aws/credentials\ncredentials: Optional[Credentials] = None',
    ),
    (
        'composer-auth-lookalikes',
        'COMPOSER_AUTH: \'{"github-oauth": {"github.com": "${{ secrets.GITHUB_TOKEN }}"}}\'\nSECRET=\'{"a": 1}\'\nx = \'{"github-oauth": {}}\'',
    ),
    (
        'openvpn-lookalikes',
        'auth-user-pass creds.txt\n<auth-user-pass>\n</auth-user-pass>',
    ),
    (
        'server-config-lookalikes',
        'php_value session.save_path /tmp\nSetEnv APP_ENV production\nfastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\nfastcgi_param DB_PASSWORD $db_password;\nPassEnv DB_PASSWORD',
    ),
    (
        'ado-open-lookalikes',
        'f.Open("a.txt", "r", "utf-8")\nxhr.Open "GET", "http://x/y", False\nobjXML.Open("POST", url, False)',
    ),
    (
        'password-check-lookalikes',
        're.matches("^[a-z]+$", s)\nPattern.matches("^[a-z]+$", input)\nstr.matches("\\\\d+")\nencoder.matches("password", h)\nencoder.matches(raw, stored)\nencoder.encode("hello world")\nHash::check($pw, $h)\nhmac.compare_digest(a, b)\nencoder.matches("<password>", h)',
    ),
    (
        'xhr-open-lookalikes',
        'xhr.open("GET", url, true);\nxhr.open("GET", url, false, "alice")\nxhr.open("GET", url, false, "alice", pw)\nwindow.open("https://x", "_blank", "noopener")\nf.open("a.txt", "r", "utf-8", "x")\nhttp.SetCredentials user, pw, 0',
    ),
    (
        'xhr-open-long-url-lookalikes',  # three or four arguments, a variable fifth, other calls of a long literal
        'xhr.open("GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", true);\n'
        'xhr.open("GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", false, "alice")\n'
        'xhr.open("GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", false, "alice", password)\n'
        'window.open("https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", "_blank", "noopener", "Zq8vLm2pXw")\n'
        'f.Open("Provider=SQLOLEDB.1;Persist Security Info=False;Data Source=DBSERVER01\\SQLEXPRESS;Initial Catalog=Inventory;Application Name=Reports;Workstation ID=OFFICE-PC-17;Packet Size=4096;Use Encryption for Data=False", "r", "utf-8")\n'
        'print("https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", true, "alice", "Zq8vLm2pXw")\n'
        'xhr.open("GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", true, "alice", "pw")\n'
        'xhr.open("GET", "https://api.example.org/v2/reports/export?field0=value0&field1=value1&field2=value2&field3=value3&field4=value4&field5=value5&field6=value6&field7=value7&field8=value8&field9=value9&field10=value10&field11=value11&field12=value12&field13=value13", true, "alice", "${PASSWORD}")',
    ),
    (
        'slash-label-pair-lookalikes',  # no pair after the label, or a placeholder's
        'username/password: https://x.example/y\nusername/password: your username / your password\nuser/pass: admin/password\n'
        'username/password: {user}/{password}\nusername/password: root/<password>\nuser/pass: $USER/$PASS\nusername/password: root/changeme\n'
        'file / pass: foo/bar123\nthe user / password: see below',
    ),
    (
        'slash-label-pair-spaced-lookalikes',  # prose and paths after the label, a word or a file for a password, a path holding the label
        'the user/password form root/home\nsee user/password src/config for the form\nuser/password tests/test_v2.py\n'
        'git mv app/models/user/password lib/Auth2x\nopen ./user/password src/Zq8vLm2pXw\nuser/pass admin/hunter\n'
        'the user/password admin/password\nuser/password root/<password>\nuser/password $USER/$PASS\n'
        'user/password src/config/Zq8vLm2pXw\nuser/password\tadmin\n'
        'creds (user/pass): admin/<password>\ncreds (user/pass): see the vault\nlogin (user/password): your username / your password\n'
        'creds [user/pass): admin/Zq8vLm2pXw\nuser/pass = admin/changeme\nuser/pass = $USER/$PASS\nuser/pass == x/Zq8vLm2pXw\nLogin (user/pass) -admin/Zq8vLm2pXw',
    ),
    (
        'label-pair-colon-comma-space-lookalikes',  # prose after the label; a colon or a comma label unbracketed, or code's tuple
        'login (username, password): both required\nuser/password: see the vault\nuser/password: admin only\nuser/password: the default one\n'
        'user/password: $USER $PASS\nlogin (username, password): name, email\n'
        'creds user:pass admin:Zq8vLm2pXw\nf(user:pass) admin:Zq8vLm2pXw\n'
        'r = requests.get(url, auth=(user, password))\nfor (user, password) in creds: print(user, password1)\n'
        'lambda (user, password): login(user, password2)\ncreds [user:pass) admin:Zq8vLm2pXw',
    ),
    (
        'constant-time-compare-lookalikes',  # a prefix or a format compared, not the literal; both sides literals (a test of the function)
        'return hmac.compare_digest("sha256=" + mac.hexdigest(), signature)\nreturn hmac.compare_digest(\'sha256=\' + expected, sig)\n'
        'hmac.compare_digest("sha256="+mac,signature)\nhmac.compare_digest(signature, "sha256=" + expected)\nhmac.compare_digest(sig, "sha1=%s" % digest)\n'
        'subtle.ConstantTimeCompare([]byte("sha256="+mac), []byte(sig))\nsubtle.ConstantTimeCompare([]byte(sig), []byte("sha256="+expected))\n'
        'crypto.timingSafeEqual(Buffer.from("sha256=" + digest), Buffer.from(sig))\ncrypto.timingSafeEqual(Buffer.from(sig), Buffer.from("sha256=" + digest))\n'
        'hmac.compare_digest("nevér-issued", "never-issued")\nassert secrets.compare_digest("abcd", "xyzw") == False\nSecureRandom.compare_digest("test", "TEST")\n'
        'secrets.compare_digest(b"dummy_value_for_timing_attack", b"dummy_value_for_timing_attack")\n'
        'subtle.ConstantTimeCompare([]byte("abcd"), []byte("abce")) == 1\ncrypto.timingSafeEqual(Buffer.from("abcd", "utf8"), Buffer.from("abce", "utf8"))',
    ),
    (
        'constant-time-compare-prefix-lookalikes',  # prefixes or formats on both sides; a short literal; a prefix against a variable
        'hmac.compare_digest("sha256=" + x, "sha256=" + y)\nhmac.compare_digest("sha1=%s" % a, "sha1=%s" % b)\n'
        'hmac.compare_digest("sha256=" + x, "abc")\nhmac.compare_digest("v0=" + hmac.new(k, b, sha256).hexdigest(), request.headers["X-Sig"])\n'
        'hmac.compare_digest("sha256=" + x, "")\nhmac.compare_digest("sha256=" + x, "<signature>")\n'
        'hmac.compare_digest("sha256={}".format(d), sig)\nhmac.compare_digest(request.headers["X-Sig"], expected)\nhmac.compare_digest(f"sha256={a}", f"sha256={b}")',
    ),
    (
        'prose-login-lookalikes',
        'Connect to localhost:8080 and log in\nUse localhost:8080 to log in\nmeeting at 10:30 tomorrow\nsee file.py:123 for details\nlog in with your username/password\nsign in with Google/GitHub\nlog in to example.com/dashboard\nUse https://example.com:8443 to log in\nuser/pass: see the vault\npath/pass: foo/bar123\nthe key:value pairs\nlog in as admin to continue\nuse ssh:22 to login',
    ),
    (
        'caddy-env-lookalikes',
        'env PATH /usr/bin\nenv -u API_TOKEN python app.py\nenv API_TOKEN {$API_TOKEN}\nenv DB_PASSWORD $DB_PASSWORD\nprintenv API_TOKEN\npassenger_env_var RAILS_ENV production;\nthe env API_TOKEN is set\nenv API_TOKEN',
    ),
    (
        'comparison-lookalikes',
        'if password == "":\nif token == None:\nif token == "EOF":\nif key == "Enter":\nif event.key === "Escape"\nif token_type == "Bearer":\nif password == "password":\nif status == "active":\nif x == "abc123def456ghi789":\nname.equals("x")\n"abc".equals(name)\nif secret == "changeme":\nif len(token) == 40\nif password != "${PASSWORD}":',
    ),
    (
        'literal-first-comparison-lookalikes',
        'if "" == password:\nif None == token:\nif "EOF" == token:\nif "Enter" == key:\nif "Escape" === event.key\nif "Bearer" == token_type:\nif "password" == password:\nif "active" == status:\nif "abc123def456ghi789" == x:\nif "Zq8vLm2pXw" == username:\nif "changeme" == secret:\nif "abc123def" == token:\nif "${PASSWORD}" != password:\nif "<your-token>" == token:\nif "Zq8vLm2pXw" == tokens[0]:\nif "Content-Type" == key:\nhmac.compare_digest("", key)\nsubtle.ConstantTimeCompare([]byte(a), []byte(b))\ncrypto.timingSafeEqual(Buffer.from(a, "hex"), Buffer.from(b, "hex"))\ncrypto.timingSafeEqual(a, b)',
    ),
    (
        'text-encoder-stays',
        'const encoder = new TextEncoder();\nencoder.encode("hello world")\nnew TextEncoder().encode("hello world 2")',
    ),
    (
        'cli-user-password-lookalikes',
        'ab -n 100 -c 10 http://x/\nhey -n 200 http://x/\ngobuster dir -u http://x -w words.txt\nkinit alice@CORP.LOCAL\nnet use Z: \\\\srv\\share /persistent:yes',
    ),
    (
        'php-connect-lookalikes',
        '$c = oci_connect($user, $pass, $db);\nftp_login($conn, $user, $pw);\n$x = array("PWD" => "/home/dev");\nldap_bind($ds);',
    ),
    (
        'spring-scheme-lookalikes',
        '.password("{bcrypt}")\npassword: "{cipher}"\nspring.security.user.password={noop}${PW}',
    ),
    (
        'vpn-and-device-lookalikes',
        'the PSK "is a word"\ncrypto isakmp policy 10\npre-shared-key *****\n: PSK "%prompt%"',
    ),
    (
        'proxy-header-and-bundle-lookalikes',
        'proxy_set_header Host $host;\nproxy_set_header X-Api-Key $api_key;\nbundle config set --local path vendor/bundle\nbundle config gems.contribsys.com $SIDEKIQ_CREDS\nbundle config',
    ),
    (
        'httpie-query-lookalikes',
        'if token=="abc123def":\nhttp example.com page==2 token==$TOKEN\nhttp example.com q==search',
    ),
    (
        'binding-lookalikes',
        '{:password-hash "abc"}\n(def token-count 3)\n(setq api-key (getenv "API_KEY"))\n@token "abc"\nlet g:token_limit = 4\nsee s:token\nlet g:netrw_passwd=a:2\nlet s:password = l:pw',
    ),
    (
        'infix-pair-lookalikes',
        'mapOf("key" to "value")\nmapOf("token" to token)\nMap("api_key" -> "value")\n"password" to "password"',
    ),
    (
        'provider-named-key-lookalikes',
        'sort_key = "name"\nopenai_key = os.environ["OPENAI_API_KEY"]\nopenai_key = None\nstripe_key: str\nopenai_key = "gpt"',
    ),
    (
        'label-pair-comma-lookalikes',  # a list after a slash label: words, a placeholder, prose; code's call
        'creds (user/pass): name, email\ncreds (user/pass): admin, bob\nlogin (user/password): admin, see the vault\n'
        'creds (user/pass): admin, <password>\nuser/pass: name, email\nuser/password: admin, changeme\nf(user/pass): a, b2c3d4e5',
    ),
    (
        'prose-lookalikes-before-markup',  # words and code before a tag or an escaped break
        '<p>the password is stored in Vault</p>\n<p>the password is incorrect</p>\n<p>the token is tokenizer.eos_token</p>\n'
        'x "the password is stored\\nin vault"\n<p>the password is required<br>try again</p>',
    ),
    (
        'slash-label-placeholder-and-command-paths',  # a user and a placeholder after the label; a command's two paths
        'user/password: admin <password>\nuser/password: admin $PASS\nuser/password: admin {password}\nuser/password: admin ********\n'
        'mv user/password lib/Auth2x\ngit mv -f user/pass src/Cfg2x\n$ cp user/password lib/Auth2x\ncd x && mv user/password lib/Auth2x\n'
        'log "ok\\nmv user/password lib/Auth2x"',
    ),
    (
        'slash-label-paths-of-more-commands',  # Windows' and other VCSs' commands that take paths
        'move user/password lib/Auth2x\nren user/password lib/Auth2x\nxcopy /y user/password lib/Auth2x\nsvn mv user/password lib/Auth2x\n'
        'hg mv user/pass src/Cfg2x\n$ robocopy user/password lib/Auth2x\nsubl user/password lib/Auth2x',
    ),
    (
        'pgpass-lookalikes-in-single-quotes',  # formats, times, IPv6, host:port and lifetimes in single quotes
        "f('%H:%M:%S', '12:30:45:10:99', 'a::b::c', 'fe80::1:2:3')\nx = 'localhost:5432 is up'\nlet s: &'static str = \"a::b::c::d\";\n"
        "it's h:5432:db:u ok",
    ),
    (
        'pgpass-lookalikes-in-strings',  # times, IPv6, host:port, C++/Rust paths, CSV, in a JSON string inside text and after its escaped breaks
        'log "12:30:45:10:99\\n2001:db8:0:0:1\\nfe80::1:2:3:4"\nx = "std::vector<int>::iterator"; y = "a::b::c::d"\n'
        'let p = "crate::io::fs::File";\nmsg "db at localhost:5432, see host:port docs\\n"\n'
        'row "name,port,db,user\\nweb,5432,shop,app"\n"a\\n12:30:45:99:10\\nb"\n<b>12:30:45</b> and <i>fe80::1:2:3</i>',
    ),
    (
        'command-output-lookalikes-before-an-escaped-break',  # words, names, paths; a command that crosses an escaped break
        'x "echo $DB_PASSWORD gives me nothing\\nok"\nx "printenv API_TOKEN prints API_TOKEN_V2\\nok"\n'
        'x "cat key.txt\\nthe build says: Abc123xyz\\nok"\nx "pass show db prints /home/me/.password-store\\nok"\n'
        '<p>echo $DB_PASSWORD prints nothing</p>\nx "echo $DB_PASSWORD gives me \\"nothing\\"\\nok"',
    ),
    (
        'trailing-bang-lookalikes',  # a word and an exclamation is no password
        'the password is wrong!\nthe password is incorrect!!\necho $DB_PASSWORD gives me nothing!\nuser/password: admin only!\n'
        'the token is tokenizer.eos_token!\nI\'ve set `DB_PASSWORD` to `changeme!`\nPasswort: falsch!\nthe password is \"wrong!\"',
    ),
    (
        'generics-are-no-html-tags',  # a generic's angle brackets stay in their text
        'SECRET_TYPE=Vec<u8>\ntoken_kind: Option<String>\nlet key_map: HashMap<String, Vec<u8>> = x;\nTOKEN_LIST=List<Token>',
    ),
    (
        'pgpass-lookalikes-on-a-pgpass-command',  # times, IPv6, port maps, mounts, passwd/shadow rows, slices, variables on a line naming .pgpass
        "ls -l ~/.pgpass  # -rw------- 1 me me 42 Dec  6 12:30:45 /home/me/.pgpass\n"
        "docker run -v ~/.pgpass:/root/.pgpass:ro -p 127.0.0.1:5432:5432 postgres:16 # pgpass\n"
        "echo 12:30:45:00:01 fe80:0:0:0:1:2 2001:db8::1:2:3 >> ~/.pgpass.log\n"
        "grep -e user:x:1000:1000:me -e root:*:19000:0:99999:7::: /etc/passwd ~/.pgpass\n"
        "echo localhost:5432:db:user:$PGPASSWORD >> ~/.pgpass; printf '%s\\n' $H:$P:$D:$U:${PW} > $PGPASSFILE\n"
        "python -c 'print(a[1:2:3], b[::2])' # see ~/.pgpass, a:b:c:d:e in prose\n"
        "awk -F: '{print $1\":\"$2}' ~/.pgpass | sort -t: -k2,2n",
    ),
    (
        'pgpass-printf-and-variable-lookalikes',  # variables as printf's password, formats that make no row, a variable set to another file
        "printf 'h:5432:db:u:%s\\n' \"$PGPASSWORD\" >> ~/.pgpass\nprintf '%s:%s:%s:%s:%s\\n' localhost 5432 shop app main\n"
        "printf '%s:%s\\n' a b\nprintf '%02d:%02d:%02d:%02d:%s\\n' 1 2 3 4 x\nprintf '%s:%s:%s:%s:%s\\n' a b c d e > ~/.pgpass\n"
        "F=~/.pgpass\necho 12:30:45:00:11 >> $F",
    ),
    (
        'pgpass-shaped-word-written-to-another-variable',  # the variable written to names no .pgpass
        "LOG=/tmp/app.log\necho db.acme.io:5432:shop:app:main >> $LOG\nOUT=/tmp/x; echo h.acme.io:5432:db:u:main | tee -a $OUT",
    ),
    (
        'pgpass-shaped-words-without-pgpass',  # a host:port:a:b:c word on a line that names no .pgpass file
        "echo db.acme.io:5432:shop:app:main >> notes.txt\nstats host.x:8080:GET:200:ok\nsee a:1:b:c:d",
    ),
    (
        'config-line-code-in-one-word',  # a call, an index, a generic, a substitution: code, on a line of its own
        "token=get_token()\npassword: Optional[str]\nexport GITHUB_TOKEN=$(gh auth token)\nkey=keys[0]\n"
        'api_key=os.environ["API_KEY"]\npassword=request.args.get("p")\ntoken: Vec<u8>\n'
        "password = Option<String>\nPASSWORD=${DB_PASSWORD:-changeme}\nAPI_KEY=sk-<your key here>\n"
        "def f(startToken:Token=None): pass",
    ),
    # What the views read as decoded, and the SQL rule, leave alone.
    (
        "sql-columns-without-literals",  # placeholders, a query, a column's definition, an empty literal
        "INSERT INTO users (name, password) VALUES (?, ?);\nINSERT INTO users (name, password) VALUES ($1, $2)\n"
        'cur.execute("INSERT INTO users (name, password) VALUES (%s, %s)", (name, pw))\n'
        "INSERT INTO users (name, password) VALUES (:name, :password)\nSELECT password FROM users WHERE name = 'bob'\n"
        "ALTER TABLE users ADD COLUMN password TEXT NOT NULL DEFAULT ''\nINSERT INTO users (name, password) VALUES ('bob', '')",
    ),
    (
        "sql-selects-and-copies-without-secrets",  # a SELECT no INSERT feeds, a COPY whose columns name no secret
        "SELECT name, 'x' FROM users WHERE password = $1; SELECT 'a', 'b' UNION SELECT 'c', 'd';\n"
        "COPY public.users (id, email) FROM stdin;\n1\ta@b.c\n\\.\n",
    ),
    (
        "sql-hashing-calls-without-secrets",  # not under a secret's column, or not handed a literal
        "UPDATE users SET name = md5('bob'), checksum = md5('abc');\nUPDATE users SET password = crypt(:pw, gen_salt('bf'));\n"
        "ok = crypt(password, salt)\npassword = md5(password)\nSELECT encode(digest('hello', 'sha256'), 'hex');\n"
        "CREATE TABLE users (id int, password text);\nINSERT INTO users VALUES (1, ?);\nINSERT INTO users VALUES ($1, $2);",
    ),
    ("sql-insert-without-secret-columns", "INSERT INTO users (name, email, role) VALUES ('bob', 'bob@example.org', 'admin'), ('al', 'al@example.org', 'dev');"),
    (
        "percent-encoded-query-without-secrets",
        "https://example.com/search?q=a%3Db%26c%3Dd&redirect=%2Fhome%3Ftab%3Dsettings&filter=name%3Abob%2Cstatus%3Aopen\n"
        "GET /api?next=%2Flogin%3Ftoken%3D%26x%3D1 HTTP/1.1\nmailto:a@b.org?subject=Hello%20World%3A%20a%20%22quote%22",
    ),
    (
        "full-width-japanese-prose",
        "\u6771\u4eac\uff1a\u6674\u308c\u3001\u6c17\u6e29\uff1d\uff12\uff15\u5ea6\uff08\u4e88\u5831\uff09\u3002\uff35\uff32\uff2c\uff1a"
        "\uff48\uff54\uff54\uff50\uff53\uff1a\uff0f\uff0f\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d \u8a2d\u5b9a\uff1a\u5b8c\u4e86\u3057\u307e\u3057\u305f\uff01",
    ),
    (
        "invisible-characters-in-prose",
        "a zero\u200bwidth space, a soft\u00adhyphen, \ufeffBOM, \U0001F468\u200d\U0001F469\u200d\U0001F467 family, \u05e2\u05d1\u05e8\u05d9\u05ea\u200f text",
    ),
    ("escaped-json-without-secrets", "log: " + nested({"password": None, "token_count": 42, "msg": "password reset sent", "path": "C:\\Users\\bob"}, 3)),
    ("html-entities-without-secrets", "<p>He said &quot;hello&quot; &amp; left; a&#61;b, x&colon;y</p>"),
    (
        "printf-conversions-and-escapes-without-secrets",  # `%2d` is printf's; `'\\\\'` a string of backslashes
        'print("%2d tokens, %5.2f%% of the password budget" % (n, p))\nsep = \'\\\\\\\\\'\nre.compile("\\x3d+")\n'
        "caf\u00e9 na\u00efve \u0935\u093f\u0915\u093f \u00a0nbsp\u3000wide",
    ),
    (
        "code-and-templates-after-a-secret-name",  # a name, a call's next argument, a template's field
        "f(token=tok1,user)\ncall(password=pw1,user_name)\nthe secret: it's fine\nx = {password: pw1, user: u}\n"
        'password = "${DB_PASSWORD}"\n"password": "%(pw)s"\ntoken: "{token}"\nauth_token = "Bearer {token}"\n'
        'PASSWORD_FILE=$HOME/.pgpass\npassword = "%s" % pw\n',
    ),
    (
        "punctuation-first-values-that-are-no-secret",  # YAML indicators and anchors, placeholders, code
        "password: |\npassword: &default\nDB_PASSWORD=<your-password>\ntoken: [str]\n"
        'password = (os.environ["PW"])\nif password==hunter2Xy7:\n    pass\nPassword=;Server=x\n'
        "token: (get_token())\nx = password & mask\nsecret: {{ .Values.secret }}\nurl?password=&next=/home\n",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in POSITIVE], ids=[c[0] for c in POSITIVE])
def test_secret_is_replaced_and_the_rest_kept(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize("text", [c[1] for c in NEGATIVE], ids=[c[0] for c in NEGATIVE])
def test_non_secrets_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


ALL_TEXTS = [c[1] for c in POSITIVE] + [c[1] for c in NEGATIVE]


@pytest.mark.parametrize("text", ALL_TEXTS)
def test_precheck_never_skips_a_rule_that_would_match(text: str) -> None:
    # The gates decide which rules run; running every rule must give the same result.
    assert _redact(text) == _redact(text, precheck=False)


@pytest.mark.parametrize("text", ALL_TEXTS)
def test_redacting_twice_changes_nothing(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


def test_count_is_the_number_of_secrets_removed() -> None:
    text = f"GITHUB_TOKEN={GHP}\npassword: hunter2\n{RSA_KEY}\nok\nPWD=/home/dev"
    redacted, n = redact_text_with_count(text)
    assert n == 3
    assert redacted.count("[REDACTED:") == 3
    assert redact_text_with_count("nothing to see here, move along") == ("nothing to see here, move along", 0)


def test_gcp_service_account_json_keeps_everything_but_the_key() -> None:
    account = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": fake(40, HEX),
        "private_key": "-----BEGIN PRIVATE KEY-----\n" + "\n".join(KEY_BODY_LINES) + "\n-----END PRIVATE KEY-----\n",
        "client_email": "bot@demo-project.iam.gserviceaccount.com",
    }
    dumped = json.dumps(account, indent=2)
    out = redact_text(dumped)
    back = json.loads(out)  # still valid JSON
    assert back["private_key"] == "-----BEGIN PRIVATE KEY-----\n[REDACTED:private-key]\n-----END PRIVATE KEY-----\n"
    assert {k: v for k, v in back.items() if k != "private_key"} == {
        k: v for k, v in account.items() if k != "private_key"
    }


def test_key_inside_a_doubly_escaped_json_dump() -> None:
    # A hook payload holding a tool_response that is itself JSON text: backslashes double up.
    payload = json.dumps({"tool_response": json.dumps({"stdout": RSA_KEY + "\n"})})
    assert "\\\\n" in payload
    out = redact_text(payload)
    assert all(line not in out for line in KEY_BODY_LINES)
    inner = json.loads(json.loads(out)["tool_response"])
    assert inner["stdout"] == "-----BEGIN RSA PRIVATE KEY-----\n[REDACTED:private-key]\n-----END RSA PRIVATE KEY-----\n"


def test_json_dump_of_many_secrets_stays_parseable() -> None:
    obj = {
        "env": f"OPENAI_API_KEY={OPENAI}\nDB_PASSWORD=hunter2\nPWD=/srv",
        "cmd": f"curl -H 'Authorization: Bearer {BEARER}' https://u:pw123@h.example.org",
        "nested": [{"note": f"token {GHP}", "n": 3}],
    }
    out = json.loads(redact_text(json.dumps(obj)))
    flat = json.dumps(out)
    for secret in (OPENAI, "hunter2", BEARER, "pw123", GHP):
        assert secret not in flat
    assert out["env"].endswith("PWD=/srv") and out["nested"][0]["n"] == 3


def test_the_json_view_keeps_what_the_text_pass_found() -> None:
    # The view redacts only strings with escapes; when it found more than the text pass, its
    # document replaced the text pass's, and the token in a string without escapes came back.
    doc = json.dumps({"remote": f"https://{GHP}@github.com/a/b.git",
                      "build": f"FROM python\nENV API_TOKEN {fake(24)}\nRUN make",
                      "deploy": f"FROM node\nENV NPM_TOKEN {fake(20)}\nRUN npm ci"})
    out = redact_text(doc)
    assert GHP not in out and fake(24) not in out and fake(20) not in out
    assert json.loads(out)["remote"] == "https://[REDACTED:github-token]@github.com/a/b.git"
    assert redact_text_with_count(doc)[1] == 3


@pytest.mark.parametrize("text", [c[1] for c in POSITIVE], ids=[c[0] for c in POSITIVE])
def test_a_json_document_loses_what_its_strings_would(text: str) -> None:
    # An MCP tool's result or `cat x.json`: one JSON string holding the planted text, no escapes
    # needed for most. The quote that opens the string read as a string literal's
    # (`"SECRET_KEY = 'x'"`) or ended an assignment's name (`"API_KEY   =   x"`), and the text
    # pass kept the secret.
    # (Which rule names a marker may differ: `Bearer x` alone is an authorization, in JSON a bearer token.)
    doc = json.dumps({"stdout": text})
    unnamed = functools.partial(re.sub, r"\[REDACTED:[a-z-]+\]", "[REDACTED]")
    assert unnamed(json.loads(redact_text(doc))["stdout"]) == unnamed(redact_text(text))


# Escaped in JSON, `password = f\"{registry_id}-auth-token\"` reads to the text pass as a password
# assigned a value that starts `f\`, not an f-string: over-redacted (nothing leaks; a line of
# code is lost). Known and left: the text pass is what catches a name and its value in two strings.
_JSON_OVER_REDACTED = {"format-fields"}


@pytest.mark.parametrize("text", [
    pytest.param(c[1], id=c[0], marks=[pytest.mark.xfail(strict=True, reason="over-redacted in JSON")] if c[0] in _JSON_OVER_REDACTED else [])
    for c in NEGATIVE
])
def test_a_json_document_of_harmless_text_is_left_alone(text: str) -> None:
    doc = json.dumps({"stdout": text})
    assert redact_text(doc) == doc


def test_a_secret_only_the_json_view_finds_is_not_cached_as_clean() -> None:
    # The same tool output reaches redaction twice (the hook payload, then the transcript). A short
    # JSON document whose secret only the JSON view finds was cached as clean by the text pass and
    # came back in clear the second time.
    doc = json.dumps({"stdout": 'echo "hunter2pass" | sudo -S apt update\nENV API_TOKEN abcdefgh12345678'})
    for _ in range(2):
        out = redact_text(doc)
        assert "hunter2pass" not in out and "abcdefgh12345678" not in out


def test_a_kubernetes_secret_as_json_loses_every_value() -> None:
    secret = {"apiVersion": "v1", "data": {"DATABASE_URL": "cG9zdGdyZXM6Ly9ib2I6aHVudGVyMkBkYi9hcHA=", "empty": ""},
              "kind": "Secret", "metadata": {"name": "db"}}
    config = {"apiVersion": "v1", "data": {"LOG_LEVEL": "info"}, "kind": "ConfigMap"}
    out = json.loads(redact_text(json.dumps({"apiVersion": "v1", "items": [secret, config], "kind": "List"})))
    assert out["items"][0]["data"] == {"DATABASE_URL": "[REDACTED:kubernetes-secret]", "empty": ""}
    assert out["items"][0]["metadata"] == {"name": "db"} and out["items"][1] == config
    assert redact_value(secret)["data"]["DATABASE_URL"] == "[REDACTED:kubernetes-secret]"


def test_redact_value_walks_nested_tool_calls() -> None:
    trace = {
        "prompt": f"deploy with {GHP} please",
        "tool_calls": [
            {
                "name": "Bash",
                "input": {"command": f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET} && aws s3 ls", "timeout": 60},
                "output": f"{RSA_KEY}\ndone",
                "success": True,
                "duration_ms": None,
            },
            {
                "name": "mcp__vault__put",
                "input": {"path": "kv/app", "data": {"password": "x", "api_key": "plain", "token": "<token>"}},
                "output": None,
            },
        ],
        "usage": {"input_tokens": 10, "output_tokens": 20},
        "tags": ("a", f"sk={STRIPE}"),
    }
    before = json.dumps(trace, default=list)
    out, n = redact_value_with_count(trace)
    assert json.dumps(trace, default=list) == before  # the input is not modified
    assert out["prompt"] == "deploy with [REDACTED:github-token] please"
    bash = out["tool_calls"][0]
    assert bash["input"] == {
        "command": "export AWS_SECRET_ACCESS_KEY=[REDACTED:assignment] && aws s3 ls",
        "timeout": 60,
    }
    assert bash["output"].endswith("-----END RSA PRIVATE KEY-----\ndone") and KEY_BODY_LINES[0] not in bash["output"]
    assert (bash["success"], bash["duration_ms"]) == (True, None)
    # Named secrets go whatever they look like; placeholders stay.
    assert out["tool_calls"][1]["input"]["data"] == {
        "password": "[REDACTED:assignment]",
        "api_key": "[REDACTED:assignment]",
        "token": "<token>",
    }
    assert out["usage"] == {"input_tokens": 10, "output_tokens": 20}
    assert out["tags"] == ("a", "sk=[REDACTED:stripe-key]")
    assert n == 6
    assert redact_value(trace) == out


def test_redact_value_keeps_plain_keys_and_non_strings() -> None:
    value = {"password": "", "api_key": None, "secret": 42, "ok": [1, 2.5, True, None], "tool_response": "x"}
    assert redact_value(value) == value
    assert redact_value(7) == 7 and redact_value(None) is None
    # An UPPER_CASE `_KEY` name alone does not make a setting a secret; a random-looking value does.
    assert redact_value({"CACHE_KEY": "user", "STRIPE_KEY": "abc123def"}) == {
        "CACHE_KEY": "user",
        "STRIPE_KEY": "[REDACTED:assignment]",
    }


def test_dict_keys_that_are_secrets_are_redacted_and_stay_unique() -> None:
    other = "gh" + "p_" + fake(35) + "Q"
    value = {GHP: 1, other: {"nested " + STRIPE: "v"}, "plain": 3, "[REDACTED:github-token]#2": "taken"}
    out, n = redact_value_with_count(value)
    assert n == 3
    # Numbered in order; a key that was already there and now collides is numbered too, so no
    # value is lost.
    assert out == {
        "[REDACTED:github-token]": 1,
        "[REDACTED:github-token]#2": {"nested [REDACTED:stripe-key]": "v"},
        "plain": 3,
        "[REDACTED:github-token]#2#2": "taken",
    }
    assert len(out) == len(value)
    flat = json.dumps(out)
    assert GHP not in flat and other not in flat and STRIPE not in flat


def test_authorization_values_go_whatever_their_key_says() -> None:
    value = {"headers": {"Authorization": "Basic " + fake(20), "Proxy-Authorization": fake(24), "authorization": "Bearer ${T}"}}
    assert redact_value(value) == {
        "headers": {
            "Authorization": "Basic [REDACTED:authorization]",
            "Proxy-Authorization": "[REDACTED:authorization]",
            "authorization": "Bearer ${T}",
        }
    }


def test_cookie_values_go_under_a_cookie_key() -> None:
    # A header dict parsed from JSON: the key names the header, so no rule over the value alone sees it.
    out = redact_value({"headers": {"Cookie": "sid=abc123; theme=dark", "Set-Cookie": "sid=abc123; Path=/; HttpOnly"}})
    assert out == {"headers": {"Cookie": "sid=[REDACTED:cookie]; theme=[REDACTED:cookie]",
                               "Set-Cookie": "sid=[REDACTED:cookie]; Path=/; HttpOnly"}}
    assert redact_value({"cookie_policy": "strict", "cookie": "cookies.txt"}) == {"cookie_policy": "strict", "cookie": "cookies.txt"}


def test_name_value_pairs_lose_the_values_their_names_make_secret() -> None:
    """{"name": X, "value": Y} objects (Kubernetes env entries, HAR headers and cookie lists, AWS
    tags) as parsed values: the name that makes Y a secret is another string than Y."""
    value = {
        "env": [{"name": "DB_PASSWORD", "value": "hunter2xyz"}, {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "token"}}}],
        "request": {"headers": [{"name": "Authorization", "value": "Bearer " + fake(24)}, {"name": "Cookie", "value": "sid=abc123; theme=dark"},
                                {"name": "Accept", "value": "*/*"}],
                    "cookies": [{"name": "sid", "value": "abc123", "path": "/"}, {"name": "csrftoken", "value": ""}]},
        "Tags": [{"Key": "api_token", "Value": "abcdef123456"}, {"Key": "team", "Value": "infra"}],
    }
    assert redact_value(value) == {
        "env": [{"name": "DB_PASSWORD", "value": "[REDACTED:assignment]"}, {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "token"}}}],
        "request": {"headers": [{"name": "Authorization", "value": "Bearer [REDACTED:authorization]"},
                                {"name": "Cookie", "value": "sid=[REDACTED:cookie]; theme=[REDACTED:cookie]"},
                                {"name": "Accept", "value": "*/*"}],
                    "cookies": [{"name": "sid", "value": "[REDACTED:cookie]", "path": "/"}, {"name": "csrftoken", "value": ""}]},
        "Tags": [{"Key": "api_token", "Value": "[REDACTED:assignment]"}, {"Key": "team", "Value": "infra"}],
    }
    # A HAR document as text: its cookie list is known as one only as JSON (the JSON view).
    har = '{"log": {"entries": [{"request": {"cookies": [{"name": "sessionid", "value": "8f7a6b5c4d3e2f1a", "path": "/"}]}}]}}'
    assert redact_text(har) == har.replace("8f7a6b5c4d3e2f1a", "[REDACTED:cookie]")
    # Not pairs: a value beside an unrelated name, and names that say nothing.
    plain = {"name": "release", "value": "v1.2.3", "cookies_enabled": [{"name": "a", "value": "b"}][:0], "items": [{"name": "x", "value": "y"}]}
    assert redact_value(plain) == plain


def test_records_that_say_their_value_is_secret_lose_it() -> None:
    """A record whose own fields say its value is secret, whatever it is named: `terraform output
    -json`'s sensitive outputs, 1Password's concealed fields, SSM's SecureString parameters, a
    form's password input. The same records saying nothing of the kind keep their values."""
    outputs = {"db_password": {"sensitive": True, "type": "string", "value": "Zq8vLm2pXw"},
               "url": {"sensitive": False, "type": "string", "value": "https://app.example.com"}}
    item = {"fields": [{"id": "x1", "type": "CONCEALED", "label": "api key", "value": "Zq8vLm2pXw"},
                       {"id": "username", "type": "STRING", "label": "username", "value": "bob"}]}
    ssm = {"Parameter": {"Name": "/prod/db/conn", "Type": "SecureString", "Value": "Zq8vLm2pXw"}}
    form = [{"type": "password", "name": "pw", "value": "Zq8vLm2pXw"}, {"type": "text", "name": "q", "value": "hello"}]
    for doc in (outputs, item, ssm, form):
        out = redact_value(doc)
        assert "Zq8vLm2pXw" not in json.dumps(out)
        assert "Zq8vLm2pXw" not in redact_text(json.dumps(doc, indent=2))
    assert redact_value(outputs)["url"]["value"] == "https://app.example.com"
    assert redact_value(item)["fields"][1]["value"] == "bob"
    assert redact_value(form)[1]["value"] == "hello"


def test_auth_values_go_only_as_base64_credentials() -> None:
    import base64

    creds = base64.b64encode(b"bot:hunter2").decode()
    assert redact_value({"auth": creds, "other": {"auth": "required"}}) == {
        "auth": "[REDACTED:assignment]",
        "other": {"auth": "required"},
    }


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("db_password", True),
        ("clientSecret", True),
        ("X-Auth-Token", True),
        ("aws_secret_access_key", True),
        ("private_key", True),
        ("SSH_KEY", True),
        ("DB_PWD", True),
        ("PWD", False),
        ("OLDPWD", False),
        ("sort_key", False),
        ("key", False),
        ("public_key", False),
        ("PUBLIC_KEY", False),
        ("max_tokens", False),
        ("tokenizer", False),
        ("private_key_id", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_mixed_documents_lose_every_secret_and_keep_every_other_line() -> None:
    """Random mixes of the cases above, one per line: each secret gone, each safe line intact."""
    rng = random.Random(7)
    # (Not a line of base64 characters alone, `pw=x`: after a key block cut short it reads as the key's next line.)
    safe_lines = [c[1] for c in NEGATIVE if "\n" not in c[1] and not re.fullmatch(r"[A-Za-z0-9+/=]+", c[1])]
    # (Nor a key block cut short: the line after it, `passwd=letmein`, reads as the key's next line.)
    # Nor a terminal session: every line after `$ pass show x` up to the next prompt is its output.
    # (Whatever its name says: `$ aws ecr get-login-password` and its output is one.)
    # (Nor a value that only the pass between tags cuts, `x<br>`, `x<span>`: `_redact` alone, held equal below, reads no tags.)
    # (Nor one that only a decoded view reads: `_redact` reads the text as typed.)
    cases = [c for c in POSITIVE if not c[0].startswith(("key-cut-short", "pasted-", "bash-mode-", "lone-tag-", *READ_IN_VIEWS)) and not c[1].startswith("$ ")]
    for _ in range(60):
        picks = rng.sample(cases, 3)
        lines = [*rng.sample(safe_lines, 4), *(p[1] for p in picks)]
        rng.shuffle(lines)
        text = "\n".join(lines)
        out = redact_text(text)
        assert out == _redact(text, precheck=False)[0]
        for line in safe_lines:
            if line in text:
                assert line in out
        for _, original, expected in picks:
            assert expected in out, (original, out)


def test_a_pgpass_line_in_a_bash_tool_input_loses_its_password() -> None:
    # The Bash tool's input, parsed: the command is a string of its own, no line start before the row.
    out = redact_value({"command": "echo db.acme.io:5432:shop:app:S3cr3tPw9 >> ~/.pgpass && chmod 600 ~/.pgpass", "description": "x"})
    assert out["command"] == "echo db.acme.io:5432:shop:app:[REDACTED:pgpass-password] >> ~/.pgpass && chmod 600 ~/.pgpass"


def test_non_ascii_text_is_handled() -> None:
    text = f"Déjà vu — token → {GHP} ✓\npassword: «hunter2»\nİstanbul"
    out = redact_text(text)
    assert GHP not in out and "hunter2" not in out
    assert out.startswith("Déjà vu — token → [REDACTED:github-token] ✓\npassword: ")
    assert out.endswith("\nİstanbul")


@pytest.mark.parametrize(
    "text",
    [
        ("-----BEGIN RSA PRIVATE KEY-----" + "A" * 100 + " ") * 2000,  # BEGIN after BEGIN, no END
        "sk-" * 30000,  # one long run of prefixes
        "ghp_" * 20000 + "x" * 40,
        "x-sk-ant-" * 30000 + "api03" + "a1" * 20,  # every prefix glued to the one before it
        "a_ghp_" * 20000 + "b" * 36,
        'password="' + "a" * 200_000,  # a quote that never closes
        ('token = "' + "a" * 1000 + "\n") * 200,
        "--" + "a" * 200_000,
        ("Bearer " + "a" * 1000 + " ") * 200,
        "eyJ" + "a.eyJ" * 30000,
        ("https://" + "u" * 1000 + ":" + "p" * 1000 + " ") * 100,
        "key=" * 50000,  # every `=` gated, none a secret
        "sort_key=lambda " * 20000,
        '\\"' * 100_000 + "password",
        "-x " * 30_000,  # a flag's program was looked for over its whole line, for every flag
        ("c++ " + "-I/usr/include/x -DFOO=1 -O2 -Wall " * 2_000 + "-c x.cpp\n") * 5,  # make VERBOSE=1
        "rabbitmqctl -n " * 30_000,  # a program's flags before its subcommand, tried from each program
        "AUTH LOGIN\n" * 50_000,  # each looks a few lines ahead for the password prompt
        "cargo login " + "a " * 100_000,
        "password " * 50_000,  # each read its line to the end for an expect script's `send`
        "pass show " * 10_000,  # each read the command line to its end for its output's line
        "1//0=" * 40_000,  # a search hit's file was tried from every `/` of one long word
        "password: $" + "a" * 100_000 + "!",  # a `$` value is read as references: every split of a name
        "| " * 100_000 + "token | x",  # a table cell tried from every `|`
        "page.fill('#password', " * 20_000,  # a typed field's literal looked for after every password
        "${PASSWORD" * 30_000,  # a default looked for after every `${`
        "x <- " * 100_000,  # R's arrow read as `=` in a copy of the whole text, at every arrow
        'encoder.matches("' * 20_000,
        '.Open "GET", ' * 20_000,
        'xhr.open("GET", u, false, "u", ' * 10_000,  # each comma's literal reads back for the call
        "user/pass: " * 20_000,
        "log in with a/" * 20_000,
        "Use a:b " * 20_000,
        "env API_TOKEN " * 20_000,
        'secret == "' * 20_000,
        'a.equals("' * 20_000,
        '"x".equals(' * 20_000,
        '"x" == secret ' * 20_000,
        '"Zq8vLm2pXw" === token && ' * 20_000,
        "subtle.ConstantTimeCompare(" * 20_000,
        'subtle.ConstantTimeCompare([]byte("' * 20_000,
        "crypto.timingSafeEqual(" * 20_000,
        'crypto.timingSafeEqual(Buffer.from("' * 20_000,
        'hmac.compare_digest("' * 20_000,
        'xhr.open("GET", "' + "a" * 300_000 + '", true, "u", "Zq8vLm2pXw")',  # one URL literal as long as the line
        '.open("GET", `' * 20_000,
        '.Open "' * 40_000,
        '.open("GET", "x", {' * 15_000,
        '.Open("x", "sa", ' * 15_000,
        'hmac.compare_digest("a", "' * 20_000,  # each literal reads on for a second literal
        'hmac.compare_digest(x, "a" + ' * 20_000,
        'hmac.compare_digest(a.b(c(d(' * 20_000 + ', "Zq8vLm2pXw")',  # a first argument's calls nest and chain
        'hmac.compare_digest("p" + x % ' * 20_000 + ', "Zq8vLm2pXw")',
        "hmac.compare_digest(" + "a." * 50_000 + ', "Zq8vLm2pXw")',  # a dotted chain read as a name or as calls
        'hmac.compare_digest(x["k"][' * 20_000 + ', "Zq8vLm2pXw")',
        "creds (user/pass) a/" * 20_000,  # each label reads its pair, its first half read back from its second
        "user/password a/b " * 20_000,
        "\\n$ pass show x " * 20_000,  # each prompt looked back along its line for a string's opening quote
        '"\\n$ pass show x\\nZq8vLm2pXw" ' * 10_000,
        '"' + "$ pass show x\\nZq8vLm2pXw\\n" * 10_000 + '"',  # one string's thousands of alike lines paired by a diff
        ("\\" * 50 + '"$ echo $TOKEN\\n') * 5_000,
        "creds (user, pass) a, " * 20_000,  # a comma label's pair
        "creds (user:pass) a:" * 20_000,
        "user/password: a " * 20_000,  # a space between the pair's halves
        "<bash-input>" * 20_000 + "<bash-stdout>",  # each opening tag read the text to its end for a closing one
        "\\u003cbash-input\\u003e" * 20_000 + "\\u003cbash-stdout\\u003e",
        "<bash-input>x</bash-input><bash-stdout>" * 20_000,
        "h:5432:d:u:" + "\\" * 100_000 + "x\n",  # a .pgpass password's end looked for from every backslash of a run
        '"h:5432:d:u:p' * 5_000,  # each quote opens a .pgpass line in a string
        "h:5432:d:u:" + "'" * 100_000,  # each quote's line looked for its host's letter to the run's end
        "echo " + "db.x:5432:d:u:p9 " * 10_000 + ">> ~/.pgpass",  # every word of one long command a .pgpass line
        "pgpass " + "(a:1:b" * 30_000,  # each `(` opens a word
        "pgpass a:1:b:c:" + "'x'" * 60_000 + ":",  # quoted pieces of a password, then a sixth field
        "pgpass =" + "a" * 200_000 + ":1:b:c:d",  # one long host
        "F=pgpass " * 20_000 + "\necho h.x:5432:d:u:p9 >> $F\n",  # a variable's setting looked for before each row
        ("F=~/.pgpass\n" + "echo h.x:5432:d:u:p9 >> $F $G $H\n" * 5_000),
        "printf '" + "x" * 200_000,  # a format that never closes
        "printf 'h:5432:d:u:%s\\n'" + " a" * 100_000,  # more arguments than conversions
        "pass show x prints" + " " * 100_000 + "!",  # the spaces after a printer's verb split every way between two runs
        "echo $TOKEN" + " " * 100_000,  # ... and before it, around an optional comma
        "pass show x prints \\nAbc123xyz\\n" * 5_000,  # each printed value ends at an escaped break
        "the password is " + '\\"' * 50_000,  # escaped quotes around a prose value
        "the password is " + "!" * 100_000,  # a `!` is the value's own now, not a stop after it
        "user/password: admin/" + "!" * 100_000,
        "xcopy /y " * 20_000 + "user/password lib/Auth2x",  # a path command's flags read back from the label
        "the password is a1b2c3" + "<span x" * 20_000,  # each of a value's characters tried as the end before a tag
        "DB_PASSWORD=Zq8vLm2pXw<br>" * 5_000,  # every value cut at a lone opening tag
        "<" * 100_000 + "p>",
        "%3D" * 100_000,  # every percent-encoded `=` a view's piece
        "password%3D" * 30_000,
        "%25" * 60_000 + "3D",  # encoded again and again: a round for each, up to the bound
        "\\" * 200_000 + '"',  # one run of backslashes, halved each round
        '\\\\\\"password\\\\\\": ' * 20_000,
        "\u200b" * 200_000 + "ghp_",
        "password\u200b=" * 30_000,
        "\uff1d" * 100_000,
        "password\uff1dx " * 20_000,
        "&quot;" * 60_000,
        ("x" * 3000 + "%3D") * 100,  # triggers far apart: a window each
        ("password%3Dab " + "y" * 900 + "\n") * 300,  # windows that touch, merged
        "%E2%80%8B" * 60_000,
        "&#8203;" * 60_000,
        "a\u0301" * 100_000,
        "VALUES (" * 30_000,  # each `VALUES` reads its rows
        "INSERT INTO t (password) VALUES " + "('x'), " * 30_000,  # one INSERT's many rows
        "INSERT INTO t (password) VALUES ('Zq8vLm2pXw');" * 10_000,
        "INSERT INTO t (password) VALUES (" + "(" * 50_000,
        "INSERT INTO t (password) SELECT " * 20_000,  # each SELECT looks back for its column list
        ") SELECT " * 30_000,
        "COPY t (password) FROM stdin;\n" * 20_000,  # each COPY reads its rows to `\.`
        "COPY t (password) FROM stdin;\n" + "a\tb\n" * 30_000,
        "a-sk-ant-" + "b1" * 100_000,  # one glued token's long body
        "CREATE TABLE t (id int, password text);\nINSERT INTO t VALUES (1, 'x');\n" * 10_000,  # each INSERT finds its table's last CREATE
        "password = md5(" * 30_000,  # each hashing call reads its arguments
        "p\u0430ss " * 50_000,  # each mixed-script word folded in a view
    ],
    ids=["begin-no-end", "sk-run", "ghp-run", "glued-sk-ant-run", "glued-ghp-run", "open-quote", "open-quotes", "dashes", "bearers", "jwt-run", "urls", "key-eq", "rejected-matches", "escapes",
         "flags-run", "compile-lines", "subcommand-flags", "auth-logins", "positional-words", "passwords", "pass-shows", "slashes",
         "dollar-value", "table-pipes", "typed-fields", "var-defaults", "r-arrows", "encoder-matches", "msxml-opens", "xhr-opens",
         "user-pass-labels", "log-ins", "use-pairs", "caddy-envs", "comparisons", "equals-calls", "yoda-equals",
         "yoda-comparisons", "yoda-comparison-secrets", "constant-time-compares", "constant-time-compare-literals", "timing-safe-equals",
         "timing-safe-equal-literals", "compare-digest-literals", "open-long-url", "open-template-urls", "msxml-open-quotes", "open-brace-args",
         "ado-open-users", "compare-digest-literal-pairs", "compare-digest-prefixes",
         "compare-digest-nested-calls", "compare-digest-prefix-chains", "compare-digest-dotted-chain", "compare-digest-subscripts",
         "bracketed-slash-labels", "spaced-slash-labels", "escaped-prompts", "escaped-sessions", "escaped-long-session",
         "escaped-backslash-runs", "comma-labels", "colon-labels", "spaced-pairs",
         "bash-mode-opening-tags", "bash-mode-escaped-opening-tags", "bash-mode-unclosed-outputs",
         "pgpass-backslash-run", "pgpass-quoted-lines", "pgpass-quote-run", "pgpass-words", "pgpass-word-parens",
         "pgpass-word-quoted-pieces", "pgpass-word-long-host", "pgpass-variable-settings", "pgpass-variable-writes",
         "pgpass-printf-unclosed", "pgpass-printf-arguments", "printer-verb-spaces", "printer-close-spaces",
         "printer-escaped-breaks", "prose-escaped-quotes", "prose-bangs", "pair-bangs", "path-command-flags",
         "prose-value-tags", "values-before-opening-tags", "lt-run-then-tag", "percent-equals-run", "percent-assignments",
         "percent-encoded-percents", "backslash-run", "escaped-names", "zero-width-run", "zero-width-names", "full-width-equals-run",
         "full-width-assignments", "entity-run", "view-windows-apart", "view-windows-merged", "percent-utf8-run",
         "numeric-entity-run", "combining-run", "sql-values-run", "sql-many-rows", "sql-many-inserts", "sql-open-brackets",
         "sql-selects", "sql-select-brackets", "sql-copies", "sql-copy-rows",
         "glued-long-body", "sql-creates-and-inserts", "sql-hashing-calls", "mixed-script-words"],
)
def test_pathological_input_finishes_quickly(text: str) -> None:
    # A quadratic regex takes minutes on these. Linear work is milliseconds for most, but a
    # few seconds for the slowest on a slow CPU (`user/password: a ` x 20,000: 2.2-2.9 s on a
    # 2-core AMD EPYC, 4.1 s at twice the length), which a 3 s bound failed on a loaded CI run.
    start = time.perf_counter()
    redact_text(text)
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize("anchor", sorted({gate.anchor for gate in _GATES}))
def test_a_line_of_one_anchor_repeated_finishes_quickly(anchor: str) -> None:
    # The class behind the cases above: every rule is tried at its gate's anchor, so an anchor
    # repeated along one line is where a rule or look that reads "to the end of the line" from
    # each of them turns quadratic (minutes at this size); linear work is well under a second.
    for separator in (" ", "=", ":", "/", ".", "\""):
        text = (anchor + separator) * (100_000 // (len(anchor) + 1))
        start = time.perf_counter()
        redact_text(text)
        assert time.perf_counter() - start < 3.0, (anchor, separator)


# --- the planted corpus (tests/secret_corpus.py): every format, every secret value gone ---


@pytest.mark.parametrize("case", SECRET_CASES, ids=[c.id for c in SECRET_CASES])
def test_planted_secret_is_gone(case: SecretCase) -> None:
    out = redact_text(case.text)
    assert [s for s in case.secrets if s in out] == []
    assert "[REDACTED:" in out
    assert out == _redact(case.text, precheck=False)[0]
    assert redact_text(out) == out


def test_recall_on_the_planted_corpus_is_complete() -> None:
    # One number for the record (benchmarks/bench_secrets.py prints it beside detect-secrets').
    missed = [c.id for c in SECRET_CASES if any(s in redact_text(c.text) for s in c.secrets)]
    assert len(SECRET_CASES) >= 60 and len({c.id for c in SECRET_CASES}) == len(SECRET_CASES)
    assert missed == []


@pytest.mark.parametrize(("case_id", "text"), BENIGN_CASES, ids=[c[0] for c in BENIGN_CASES])
def test_benign_corpus_is_left_alone(case_id: str, text: str) -> None:
    assert redact_text(text) == text


def test_planted_secrets_inside_a_json_payload_are_gone() -> None:
    # As the daemon sees them: strings inside a hook payload, keys included.
    payload = {"cases": [{"command": c.text, c.text: c.id} for c in SECRET_CASES]}
    flat = json.dumps(redact_value(payload))
    assert [c.id for c in SECRET_CASES if any(s in flat or json.dumps(s)[1:-1] in flat for s in c.secrets)] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Code references under secret names stay; random text in a name's shape goes.
        ("token = self.token", "token = self.token"),
        ('password: os.environ["X"]', 'password: os.environ["X"]'),
        ("api_key=config.api_key", "api_key=config.api_key"),
        ("session_token: eyJx.y.z", "session_token: [REDACTED:assignment]"),
        ("session_token: eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "session_token: [REDACTED:jwt]"),
        ("token: abc123.def456.ghi789", "token: [REDACTED:assignment]"),
        # Three parts after a colon: data (YAML), unless it starts at an object code reaches into or
        # ends in a secret's name or a type.
        ("session_token: aaa.bbb.ccc", "session_token: [REDACTED:assignment]"),
        ('{"session_token": "aaa.bbb.ccc"}', '{"session_token": "[REDACTED:assignment]"}'),
        ("token: this.props.token, apiKey: process.env.API_KEY,", "token: this.props.token, apiKey: process.env.API_KEY,"),
        ("password: req.body.password\ntoken: torch.nn.Module", "password: req.body.password\ntoken: torch.nn.Module"),
        # NAME = value mid-line and after export; the value is random, or the line is config.
        ("echo aws_secret_access_key = " + fake(40), "echo aws_secret_access_key = [REDACTED:assignment]"),
        ("x GITHUB_TOKEN = ghxAbCdEfGhIjKlMnOpQrStUv", "x GITHUB_TOKEN = [REDACTED:assignment]"),
        ("export DB_PASSWORD = hunter2", "export DB_PASSWORD = [REDACTED:assignment]"),
        ("    self.password = user_password", "    self.password = user_password"),
        # sk- words are CSS, not keys.
        (".sk-circle-2x-animation-delay { }", ".sk-circle-2x-animation-delay { }"),
        ("sk-fading-circle sk-cube-grid-9", "sk-fading-circle sk-cube-grid-9"),
        # Short flags belong to their program.
        ("mkdir -p build && ssh -p 2222 host && docker run -u 1000:1000 img", "mkdir -p build && ssh -p 2222 host && docker run -u 1000:1000 img"),
        ("mysql -u root -p mydb", "mysql -u root -p mydb"),  # -p alone prompts; mydb is the database
        ("mysql -u root -phunter2 mydb", "mysql -u root -p[REDACTED:cli-flag] mydb"),
        ("sshpass -p 'pw1!x' ssh -p 22 h", "sshpass -p '[REDACTED:cli-flag]' ssh -p 22 h"),
        ("curl -u bob:s3cret https://h", "curl -u bob:[REDACTED:cli-flag] https://h"),
        ('curl -u "$USER:$TOKEN" https://h', 'curl -u "$USER:$TOKEN" https://h'),
        ("openssl rsa -passin pass:pw9 -passout env:PW", "openssl rsa -passin pass:[REDACTED:cli-flag] -passout env:PW"),
        # ... also where the command is a quoted value: a shell variable, an alias, compact JSON, an f-string.
        ('MYSQL="mysql -u root -phunter2 shop"', 'MYSQL="mysql -u root -p[REDACTED:cli-flag] shop"'),
        ("alias db='redis-cli -a hunter2'", "alias db='redis-cli -a [REDACTED:cli-flag]'"),
        ('{"command":"sshpass -p hunter2 ssh h"}', '{"command":"sshpass -p [REDACTED:cli-flag] ssh h"}'),
        ('cmd = f"curl -u bob:s3cret {url}"', 'cmd = f"curl -u bob:[REDACTED:cli-flag] {url}"'),
        ('MKDIR="mkdir -p build"; SSH="ssh -p 2222"', 'MKDIR="mkdir -p build"; SSH="ssh -p 2222"'),
        # A command in a "..." string: its value ends where the string does, the JSON after it stays.
        ('{"db": "mysql -u root -phunter2", "test": "jest"}', '{"db": "mysql -u root -p[REDACTED:cli-flag]", "test": "jest"}'),
        ('{"db":"mysql -phunter2","test":"jest --ci"}', '{"db":"mysql -p[REDACTED:cli-flag]","test":"jest --ci"}'),
        ('{"a":"keytool -storepass hunter2","b":"ls"}', '{"a":"keytool -storepass [REDACTED:cli-flag]","b":"ls"}'),
        ('mysql -p"my pw" db', 'mysql -p"[REDACTED:cli-flag]" db'),
        # Code constants and lists of names.
        ("redis-cli --pass hunter2 ping", "redis-cli --pass [REDACTED:cli-flag] ping"),
        ("az storage blob list --account-key abcDEF123== -n x", "az storage blob list --account-key [REDACTED:cli-flag] -n x"),
        ("tool --bypass cache", "tool --bypass cache"),
        ("SEED_SALT = 0x9E3779B1", "SEED_SALT = 0x9E3779B1"),
        # A person's secret may be words: under a secret's name, dashed words still go.
        ("SECRET=correct-horse-battery-staple", "SECRET=[REDACTED:assignment]"),
        ('client_secret = "my-super-secret-value-2024"', 'client_secret = "[REDACTED:assignment]"'),
        ("__slots__ = ('user', 'password', 'host', 'port')", "__slots__ = ('user', 'password', 'host', 'port')"),
        ("lowering_pass: PassType | None = None", "lowering_pass: PassType | None = None"),
        ("define('DB_PASSWORD', 'hunter2');", "define('DB_PASSWORD', '[REDACTED:assignment]');"),
        # A connection string's Pwd (ODBC, ADO.NET, MySQL Connector) is a password; the shell's PWD is not.
        ("Server=db;Database=app;Uid=sa;Pwd=hunter2;", "Server=db;Database=app;Uid=sa;Pwd=[REDACTED:assignment];"),
        ('"Default": "DRIVER={ODBC Driver 18};SERVER=db;UID=sa; PWD=hunter2"',
         '"Default": "DRIVER={ODBC Driver 18};SERVER=db;UID=sa; PWD=[REDACTED:assignment]"'),
        ("cd /srv/app; PWD=/srv/app make", "cd /srv/app; PWD=/srv/app make"),
    ],
)
def test_names_flags_and_shapes(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert _redact(text) == _redact(text, precheck=False)


def test_a_failure_never_carries_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import capture_daemon.redact as redact

    secret = "hunter2-" + fake(20)

    def broken(text: str, precheck: bool = True) -> tuple[str, int]:
        raise ValueError(f"cannot handle {text!r}")

    monkeypatch.setattr(redact, "_redact", broken)
    for call in (lambda: redact.redact_text(secret), lambda: redact.redact_value({"k": [secret]})):
        with pytest.raises(redact.RedactionError) as info:
            call()
        assert secret not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "text",
    ["\ud800 password=\udfff", "\x00" * 50 + "token=\x00abc", "auth: " + "=" * 40, '"auth": "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"',
     "client-key-data: LS0tLS1CRUdJTi" + "\u2603" * 10, "LS0tLS1CRUdJTi!", "machine\tx login\ty password\t"],
)
def test_odd_input_does_not_raise(text: str) -> None:
    redact_text(text)
    redact_value({text: text})


@pytest.mark.parametrize("case", SECRET_CASES, ids=[c.id for c in SECRET_CASES])
def test_planted_secret_is_gone_from_json_inside_json(case: SecretCase) -> None:
    # An MCP tool's result or a tool output holding JSON text: the command's quotes are \" and its
    # lines end in \n, at two levels of escaping; the secret must go all the same.
    text = json.dumps({"tool_response": json.dumps({"content": [{"type": "text", "text": case.text}]})})
    out = redact_text(text)
    escaped = [json.dumps(json.dumps(s)[1:-1])[1:-1] for s in case.secrets] + list(case.secrets)
    assert [s for s in escaped if s in out] == []
    inner = json.loads(json.loads(out)["tool_response"])  # still the same JSON, redacted
    assert inner["content"][0]["type"] == "text"


def test_a_json_document_keeps_its_layout_when_the_text_pass_suffices() -> None:
    account = json.dumps({"private_key": RSA_KEY + "\n", "n": 1}, indent=2)
    assert redact_text(account).startswith('{\n  "private_key": "-----BEGIN RSA PRIVATE KEY-----\\n[REDACTED:private-key]')


# Claude Code's Read tool numbers each line of the file it returns (`     1→text` in 2.0, `1\ttext`
# in 2.1), and so does `cat -n`; the trace keeps the tool result as the model saw it.
READ_STYLES = {"arrow": lambda i, line: f"{i:>6}→{line}", "tab": lambda i, line: f"{i}\t{line}",
               "cat-n": lambda i, line: f"{i:>6}\t{line}"}


def _numbered(text: str, style: str) -> str:
    return "\n".join(READ_STYLES[style](i, line) for i, line in enumerate(text.split("\n"), 1))


@pytest.mark.parametrize("style", READ_STYLES)
def test_planted_secrets_are_gone_from_a_file_read_with_line_numbers(style: str) -> None:
    leaked = [c.id for c in SECRET_CASES if any(s in redact_text(_numbered(c.text, style)) for s in c.secrets)]
    assert leaked == []
    # What is not a secret stays, line numbers included.
    assert [c for c, text in BENIGN_CASES if redact_text(_numbered(text, style)) != _numbered(text, style)] == []


def test_a_numbered_file_keeps_each_line_number_on_its_line() -> None:
    key = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *[fake(64)] * 3, "-----END RSA PRIVATE KEY-----"])
    text = _numbered(f"host: db\n{key}\npassword: hunter2\nport: 5432", "arrow") + "\n\n<system-reminder>x</system-reminder>"
    out = redact_text(text)
    assert fake(64) not in out and "hunter2" not in out
    lines = out.split("\n")
    assert lines[0] == "     1→host: db" and lines[1] == "     2→-----BEGIN RSA PRIVATE KEY-----"
    assert "     6→-----END RSA PRIVATE KEY-----" in lines
    assert lines[-4:] == ["     7→password: [REDACTED:assignment]", "     8→port: 5432", "", "<system-reminder>x</system-reminder>"]


# What grep -rn, ripgrep and Claude Code's Grep tool print for each matching line: the file, the line
# number, or both, before the line. Searching a project for its secrets is what people ask for.
GREP_STYLES = {"path-number": lambda i, line: f"./deploy/app.sh:{i}:{line}", "number": lambda i, line: f"{i}:{line}",
               "path": lambda i, line: f"/home/dev/app/settings.py:{line}"}


@pytest.mark.parametrize("style", GREP_STYLES)
def test_planted_secrets_are_gone_from_search_results(style: str) -> None:
    def hits(text: str) -> str:
        return "\n".join(GREP_STYLES[style](i, line) for i, line in enumerate(text.split("\n"), 1))

    one_line = [c for c in SECRET_CASES if "\n" not in c.text.strip()]  # grep prints lines, not files
    assert [c.id for c in one_line if any(s in redact_text(hits(c.text)) for s in c.secrets)] == []
    assert [c for c, text in BENIGN_CASES if redact_text(hits(text)) != hits(text)] == []
    assert redact_text(hits("SECRET_KEY = 'x9!kq-Zm2@pw7'\nDEBUG = True")) == \
        hits("SECRET_KEY = '[REDACTED:assignment]'\nDEBUG = True")


# Markup that touches its text, no whitespace between: Claude Code stores a `!` turn as
# `<bash-input>cmd</bash-input><bash-stdout>out</bash-stdout>` with the output trimmed (its first
# line touches `<bash-stdout>`, its last `</bash-stdout>`), a slash command's output inside
# `<local-command-stdout>`; HTML puts cells in `<td>`. A secret found alone must be found there.
TAG_WRAPPERS = {
    "bash-stdout": "<bash-input>cat config</bash-input><bash-stdout>{}</bash-stdout><bash-stderr></bash-stderr>",
    "local-command-stdout": "<command-name>/run</command-name><local-command-stdout>{}</local-command-stdout>",
    "td": "<tr><td>{}</td></tr>",
    "xml": "<value>{}</value>",
}


def _wrapped(text: str, wrapper: str) -> str:
    return TAG_WRAPPERS[wrapper].replace("{}", text.strip("\n"))


@pytest.mark.parametrize("wrapper", TAG_WRAPPERS)
def test_planted_secrets_are_gone_when_tags_touch_them(wrapper: str) -> None:
    leaked = [c.id for c in SECRET_CASES if any(s in redact_text(_wrapped(c.text, wrapper)) for s in c.secrets)]
    assert leaked == []
    once = [redact_text(_wrapped(c.text, wrapper)) for c in SECRET_CASES]
    assert [c.id for c, out in zip(SECRET_CASES, once) if redact_text(out) != out] == []  # idempotent


@pytest.mark.parametrize("wrapper", TAG_WRAPPERS)
def test_benign_text_between_tags_is_left_alone(wrapper: str) -> None:
    assert [c for c, text in BENIGN_CASES if redact_text(_wrapped(text, wrapper)) != _wrapped(text, wrapper)] == []


@pytest.mark.parametrize(
    "text",
    [
        "fn f(password: Option<String>) {}</code>",
        "let token = Vec<u8>::new();</code>",
        "const [password, setPassword] = useState<string>('')</pre>",
        '<Foo token={x} /></div>',
        "password: <placeholder></li>",
        "<td>password</td><td>username</td>",
        "<pre>api_key = os.environ['API_KEY']</pre>",
        "<code>password = get_password()</code>",
        "<li>token: <code>string</code></li>",
        "<Foo token={x} /><Bar password={pw} />",
        '<img src="a.png"/>Option<String> password: string</div>',
        "<system-reminder>Use the TodoWrite tool to plan.</system-reminder>",
        "<command-name>/model</command-name>\n<command-message>model</command-message>\n<command-args></command-args>",
    ],
)
def test_code_and_markup_between_tags_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<bash-stdout>FOO=1\nDB_PASS=Zq8vLm2pXw9</bash-stdout>", "<bash-stdout>FOO=1\nDB_PASS=[REDACTED:assignment]</bash-stdout>"),
        ("<local-command-stdout>API_TOKEN=Zq8vLm2pXw9Kd</local-command-stdout>",
         "<local-command-stdout>API_TOKEN=[REDACTED:assignment]</local-command-stdout>"),
        ("<td>password=Zq8vLm2pXw9</td>", "<td>password=[REDACTED:assignment]</td>"),
        ("<bash-stdout>curl -u admin:NwogJH8L1LHD!5 https://jenkins.acme.io/api/json</bash-stdout>",
         "<bash-stdout>curl -u admin:[REDACTED:cli-flag] https://jenkins.acme.io/api/json</bash-stdout>"),
        # Empty tags and HTML's void elements are markup too.
        ("<bash-stdout>DB_PASS=Zq8vLm2pXw9<br/>next</bash-stdout>", "<bash-stdout>DB_PASS=[REDACTED:assignment]<br/>next</bash-stdout>"),
        ("<p>a</p>DB_PASS=Zq8vLm2pXw9<br>", "<p>a</p>DB_PASS=[REDACTED:assignment]<br>"),
        # Not touching: read by the whole-text pass alone.
        ("<system-reminder>\nDB_PASS=Zq8vLm2pXw9\n</system-reminder>", "<system-reminder>\nDB_PASS=[REDACTED:assignment]\n</system-reminder>"),
    ],
)
def test_a_tag_ends_the_value_it_touches(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected
