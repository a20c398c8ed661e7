"""Planted secrets and benign look-alikes, one realistic line (or file) each, for measuring a redactor.

    from tests.secret_corpus import SECRET_CASES, BENIGN_CASES

`SECRET_CASES`: one case per secret format, each the way a user pastes it (an .env line, a shell
command, JSON, YAML, code, a CSV, a config file), with the secret values that must not survive.
`BENIGN_CASES`: text that looks secret-ish and is not (hashes, UUIDs, git SHAs, base64 images,
CSS, lockfile integrity, minified JS, code that names secrets, prose), which must survive whole.

tests/test_redact.py holds understudy's redactor to every case; benchmarks/bench_secrets.py
runs it and detect-secrets over both corpora side by side.

Every secret value is generated here from a seeded random source, in the shape of the real
format, so no real credential is in the repository (and no scanner or push protection finds a
literal one in this file): the same values on every run, none of them live.
"""

from __future__ import annotations

import base64
import random
import string
from dataclasses import dataclass

_rng = random.Random(20261201)

LOWER, UPPER, DIGITS = string.ascii_lowercase, string.ascii_uppercase, string.digits
ALNUM = LOWER + UPPER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"


def rand(n: int, alphabet: str = ALNUM) -> str:
    """n random characters of `alphabet`; with letters and digits in it, at least one of each
    (real tokens nearly always have both, and a few rules rely on a digit)."""
    out = [_rng.choice(alphabet) for _ in range(n)]
    pools = [p for p in (LOWER, UPPER, DIGITS) if set(p) & set(alphabet)]
    if n >= 2 * len(pools):
        for i, pool in enumerate(pools):
            if not set(out) & set(pool):
                out[_rng.randrange(n)] = _rng.choice([c for c in pool if c in alphabet])
    return "".join(out)


def password(n: int = 14) -> str:
    """A person's password: letters, digits and shell-safe punctuation."""
    return rand(n - 2) + _rng.choice("!%^_") + _rng.choice(DIGITS)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def random_bytes(n: int) -> bytes:
    return bytes(_rng.randrange(256) for _ in range(n))


def pem_body(lines: int = 8) -> str:
    data = b64(random_bytes(48 * lines))
    return "\n".join(data[i : i + 64] for i in range(0, len(data), 64))


def pem(label: str, lines: int = 8) -> tuple[str, str]:
    body = pem_body(lines)
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----", body


def jwt() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(f'{{"sub":"{rand(12)}","iat":1733000000}}'.encode()).decode().rstrip("=")
    return f"{header}.{payload}.{rand(43, URLSAFE)}"


@dataclass(frozen=True)
class SecretCase:
    id: str  # the format, also the pytest id
    text: str  # as pasted
    secrets: tuple[str, ...]  # each must be gone from the redacted text


def _cases() -> list[SecretCase]:
    cases: list[SecretCase] = []

    def add(case_id: str, text: str, *secrets: str) -> None:
        cases.append(SecretCase(case_id, text, secrets))

    # --- AI providers ---
    s = "sk-proj-" + rand(74, URLSAFE) + "T3BlbkFJ" + rand(74, URLSAFE)
    add("openai-project-env", f"OPENAI_API_KEY={s}", s)
    s = "sk-" + rand(20) + "T3BlbkFJ" + rand(20)
    add("openai-legacy-code", f'client = OpenAI(api_key="{s}")', s)
    s = "sk-ant-api03-" + rand(93, URLSAFE) + "AA"
    add("anthropic-export", f"export ANTHROPIC_API_KEY={s}", s)
    s = "sk-or-v1-" + rand(64, HEX)
    add("openrouter-curl", f'curl https://openrouter.ai/api/v1/chat -H "Authorization: Bearer {s}"', s)
    s = "gsk_" + rand(52)
    add("groq-python", f'client = Groq(api_key="{s}")', s)
    s = "hf_" + rand(34)
    add("huggingface-cli", f"huggingface-cli login --token {s}", s)
    s = "r8_" + rand(37)
    add("replicate-env", f"REPLICATE_API_TOKEN={s}", s)
    s = "xai-" + rand(80)
    add("xai-json", f'{{"provider": "xai", "key": "{s}"}}', s)
    s = "pplx-" + rand(48)
    add("perplexity-prose", f"my perplexity key is {s} keep it safe", s)
    s = "lsv2_pt_" + rand(32, HEX) + "_" + rand(10, HEX)
    add("langsmith-yaml", f"langsmith:\n  api_key: {s}\n  project: default", s)
    s = "sk_" + rand(48, HEX)
    add("elevenlabs-header", f"xi-api-key: {s}", s)

    # --- source hosting and CI ---
    s = "ghp_" + rand(36)
    add("github-classic-remote", f"git remote set-url origin https://{s}@github.com/acme/app.git", s)
    s = "github_pat_" + rand(22) + "_" + rand(59)
    add("github-fine-grained-yaml", f"env:\n  GH_TOKEN: {s}\n", s)
    s = "ghs_" + rand(36)
    add("github-app-json-key", f'{{"{s}": {{"expires_at": "2026-12-01T00:00:00Z"}}}}', s)
    s = "glpat-" + rand(20, URLSAFE)
    add("gitlab-pat-header", f'curl --header "PRIVATE-TOKEN: {s}" https://gitlab.com/api/v4/projects', s)
    s = "glptt-" + rand(40, HEX)
    add("gitlab-trigger", f"curl -X POST -F token={s} -F ref=main https://gitlab.com/api/v4/projects/1/trigger/pipeline", s)
    s = "GR1348941" + rand(20, URLSAFE)
    add("gitlab-runner-registration", f"gitlab-runner register --registration-token {s}", s)
    s = "npm_" + rand(36)
    add("npmrc-authtoken", f"//registry.npmjs.org/:_authToken={s}", s)
    user_pw = "ci-bot:" + password()
    s = b64(user_pw.encode())
    add("npmrc-auth-base64", f"registry=https://npm.acme.io/\n_auth = {s}\nalways-auth=true", s)
    s = "pypi-AgEIcHlwaS5vcmc" + rand(120, URLSAFE)
    add("pypirc", f"[pypi]\n  username = __token__\n  password = {s}\n", s)
    s = "rubygems_" + rand(48, HEX)
    add("rubygems-credentials", f"---\n:rubygems_api_key: {s}\n", s)
    s = "dckr_pat_" + rand(27, URLSAFE)
    add("dockerhub-pat", f"echo {s} | docker login -u acme --password-stdin", s)
    s = "CCIPAT_" + rand(22) + "_" + rand(40, HEX)
    add("circleci-token", f"circleci setup --token {s} --host https://circleci.com", s)
    s = "bkua_" + rand(40, HEX)
    add("buildkite-token", f'BUILDKITE_API_TOKEN="{s}"', s)
    s = "oy2" + rand(43, LOWER + DIGITS)
    add("nuget-push", f"dotnet nuget push pkg.nupkg --api-key {s} --source https://api.nuget.org/v3/index.json", s)

    # --- cloud ---
    key_id, secret = "AKIA" + rand(16, UPPER + DIGITS), rand(40, B64)
    add("aws-env-pair", f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}", key_id, secret)
    key_id, secret = "AKIA" + rand(16, UPPER + DIGITS), rand(40)
    add("aws-credentials-file", f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\nregion = eu-west-1", key_id, secret)
    key_id, secret = "AKIA" + rand(16, UPPER + DIGITS), rand(40, B64)
    add("aws-credentials-csv", f"Access key ID,Secret access key\n{key_id},{secret}\n", key_id, secret)
    key_id, secret, pw = "AKIA" + rand(16, UPPER + DIGITS), rand(40, B64), password()
    add(
        "aws-console-csv",
        f"User name,Password,Access key ID,Secret access key,Console login link\n"
        f"deploy,{pw},{key_id},{secret},https://123456789012.signin.aws.amazon.com/console",
        pw, key_id, secret,
    )
    secret = rand(40)
    add("aws-configure-set", f"aws configure set aws_secret_access_key {secret}", secret)
    secret = rand(40)
    add("aws-secret-mid-line", f"$ grep -r secret ~/.aws → aws_secret_access_key = {secret}", secret)
    key_id, secret, session = "ASIA" + rand(16, UPPER + DIGITS), rand(40, B64), rand(300, B64)
    add(
        "aws-sts-json",
        f'{{"Credentials": {{"AccessKeyId": "{key_id}", "SecretAccessKey": "{secret}", "SessionToken": "{session}"}}}}',
        key_id, secret, session,
    )
    s = "AIza" + rand(35, URLSAFE)
    add("google-api-key-js", f'const firebaseConfig = {{ apiKey: "{s}", projectId: "acme-prod" }};', s)
    s = "GOCSPX-" + rand(28, URLSAFE)
    add("google-client-secret", f'{{"web": {{"client_id": "123.apps.googleusercontent.com", "client_secret": "{s}"}}}}', s)
    s = "ya29." + rand(120, URLSAFE)
    add("google-oauth-access", f"gcloud auth print-access-token\n{s}", s)
    s = "1//0" + rand(100, URLSAFE)
    add("google-refresh-token", f'{{"refresh_token": "{s}", "expires_in": 3599}}', s)
    key, body = pem("PRIVATE KEY", 12)
    sa = (
        '{\n  "type": "service_account",\n  "project_id": "acme",\n  "private_key_id": "'
        + rand(40, HEX)
        + '",\n  "private_key": "'
        + key.replace("\n", "\\n")
        + '\\n",\n  "client_email": "bot@acme.iam.gserviceaccount.com"\n}'
    )
    add("gcp-service-account-json", sa, *body.split("\n"))
    s = rand(86, B64) + "=="
    add("azure-storage-connection", f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={s};EndpointSuffix=core.windows.net", s)
    s = rand(43, B64).replace("+", "%2B").replace("/", "%2F") + "%3D"
    add("azure-sas-url", f"https://acme.blob.core.windows.net/backups/db.bak?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-31&sig={s}", s)
    s = rand(3) + _rng.choice(DIGITS) + "Q~" + rand(34, ALNUM + "_~.-")
    add("azure-ad-client-secret", f'app = ConfidentialClientApplication(client_id, client_credential="{s}")', s)
    s = "dop_v1_" + rand(64, HEX)
    add("digitalocean-doctl", f"doctl auth init -t {s}", s)
    s = "HRKU-AA" + rand(58, URLSAFE)
    add("heroku-key", f"heroku authorizations:create\nToken:       {s}", s)
    s = "sbp_" + rand(40, HEX)
    add("supabase-token", f"supabase login --token {s}", s)
    s = "dapi" + rand(32, HEX)
    add("databricks-token", f"[DEFAULT]\nhost = https://adb-123.azuredatabricks.net\ntoken = {s}", s)
    s = "hvs." + rand(90, URLSAFE)
    add("vault-login", f"vault login {s}", s)
    s = "dp.st." + rand(43)
    add("doppler-set", f"doppler configure set token {s}", s)
    s = "tskey-auth-" + rand(12) + "-" + rand(30)
    add("tailscale-authkey", f"tailscale up --authkey={s}", s)
    s = rand(14, LOWER + DIGITS) + ".atlasv1." + rand(70, ALNUM + "_=-")
    add("terraform-cloud", f'credentials "app.terraform.io" {{\n  token = "{s}"\n}}', s)
    s = "sha256~" + rand(43, URLSAFE)
    add("openshift-login", f"oc login --token={s} --server=https://api.acme.openshift.com:6443", s)
    s = "LTAI" + rand(20)
    add("alibaba-key-id", f"aliyun configure set --access-key-id {s}", s)

    # --- payments, messaging, SaaS ---
    s = "sk_live_" + rand(24)
    add("stripe-secret-code", f'stripe.api_key = "{s}"', s)
    s = "whsec_" + rand(32)
    add("stripe-webhook-secret", f"endpoint_secret = '{s}'", s)
    s = "EAAA" + rand(60, URLSAFE)
    add("square-access-token", f"client = Client(access_token='{s}', environment='production')", s)
    s = "sq0csp-" + rand(43, URLSAFE)
    add("square-oauth-secret", f"square_app:\n  oauth: {s}", s)
    s = rand(32, HEX) + "-us14"
    add("mailchimp-key", f'mc.set_config({{"key": "{s}", "server": "us14"}})', s)
    s = "key-" + rand(32, LOWER + DIGITS)
    add("mailgun-key", f'requests.post(url, auth=("api", "{s}"), data=msg)', s)
    s = "SG." + rand(22, URLSAFE) + "." + rand(43, URLSAFE)
    add("sendgrid-key", f"sg = SendGridAPIClient('{s}')", s)
    s = rand(32, HEX)
    add("twilio-auth-token", f"TWILIO_ACCOUNT_SID=AC{rand(32, HEX)}\nTWILIO_AUTH_TOKEN={s}", s)
    s = "shpat_" + rand(32, HEX)
    add("shopify-header", f"X-Shopify-Access-Token: {s}", s)
    s = "xoxb-" + rand(11, DIGITS) + "-" + rand(13, DIGITS) + "-" + rand(24)
    add("slack-bot-json", f'{{"ok": true, "access_token": "{s}", "team": "acme"}}', s)
    s = "T" + rand(8, UPPER + DIGITS) + "/B" + rand(8, UPPER + DIGITS) + "/" + rand(24)
    add("slack-webhook", f"SLACK_WEBHOOK_URL=https://hooks.slack.com/services/{s}", s)
    s = rand(18, DIGITS) + "/" + rand(68, URLSAFE)
    add("discord-webhook", f"requests.post('https://discord.com/api/webhooks/{s}', json=msg)", s)
    s = "M" + rand(25) + "." + rand(6, URLSAFE) + "." + rand(38, URLSAFE)
    add("discord-bot-token", f'client.run("{s}")', s)
    s = rand(10, DIGITS) + ":AA" + rand(33, URLSAFE)
    add("telegram-bot-token", f'bot = telebot.TeleBot("{s}")', s)
    u = lambda: "-".join(rand(n, HEX) for n in (8, 4, 4, 4, 12))  # noqa: E731
    s = f"{u()}@{u()}/IncomingWebhook/{rand(32, HEX)}/{u()}"
    add("teams-webhook", f'TEAMS_HOOK = "https://acme.webhook.office.com/webhookb2/{s}"', s)
    s = "PMAK-" + rand(24, HEX) + "-" + rand(34, HEX)
    add("postman-key", f"newman run coll.json --env-var apiKey={s}", s)
    s = "lin_api_" + rand(40)
    add("linear-key", f'const linear = new LinearClient({{ apiKey: "{s}" }})', s)
    s = "ATATT3xFfGF0" + rand(180, URLSAFE) + "=" + rand(8, HEX.upper())
    add("atlassian-token", f"curl -u me@acme.io:{s} https://acme.atlassian.net/rest/api/3/myself", s)
    s = "sntryu_" + rand(64, HEX)
    add("sentry-token", f"sentry-cli --auth-token {s} releases list", s)
    s = "glsa_" + rand(32) + "_" + rand(8, HEX)
    add("grafana-service-account", f'grafana_auth = "{s}"', s)
    s = "NRAK-" + rand(27, UPPER + DIGITS)
    add("newrelic-user-key", f"newrelic profile add --apiKey {s} --region us", s)
    s = "ntn_" + rand(11, DIGITS) + rand(35)
    add("notion-token", f'notion = Client(auth="{s}")', s)
    s = "sk.eyJ1Ijoi" + rand(40, URLSAFE) + "." + rand(22, URLSAFE)
    add("mapbox-secret", f"MAPBOX_DOWNLOADS_TOKEN={s}", s)
    s = "AAAA" + rand(7, URLSAFE) + ":APA91b" + rand(134, URLSAFE)
    add("firebase-fcm-key", f'headers = {{"Authorization": "key={s}"}}', s)
    s = "access-production-" + "-".join(rand(n, HEX) for n in (8, 4, 4, 4, 12))
    add("plaid-access-token", f'exchange -> {{"access_token": "{s}"}}', s)

    # --- private keys ---
    key, body = pem("RSA PRIVATE KEY")
    add("rsa-pem", f"$ cat ~/.ssh/id_rsa\n{key}\n$", *body.split("\n"))
    key, body = pem("OPENSSH PRIVATE KEY")
    add("openssh-key", key + "\n", *body.split("\n"))
    key, body = pem("EC PRIVATE KEY", 3)
    add("ec-key-json-escaped", '{"stdout": "' + key.replace("\n", "\\n") + '\\n", "exit_code": 0}', *body.split("\n"))
    key, body = pem("ENCRYPTED PRIVATE KEY")
    add("pkcs8-encrypted", key, *body.split("\n"))
    key, body = pem("PGP PRIVATE KEY BLOCK")
    add("pgp-private-key", key.replace("-----\n", "-----\nVersion: GnuPG v2\n\n", 1), *body.split("\n"))
    priv = [b64(random_bytes(48)) for _ in range(2)]
    ppk = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: deploy@acme\nPublic-Lines: 2\n"
        + b64(random_bytes(48)) + "\n" + b64(random_bytes(3)) + "\nPrivate-Lines: 2\n" + "\n".join(priv)
        + "\nPrivate-MAC: " + rand(64, HEX) + "\n"
    )
    add("putty-ppk", ppk, *priv)
    key, _ = pem("RSA PRIVATE KEY", 6)
    s = b64(key.encode())
    add("kubeconfig-client-key-data", f"users:\n- name: admin\n  user:\n    client-certificate-data: LS0t\n    client-key-data: {s}\n", s)
    s = "AGE-SECRET-KEY-1" + rand(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
    add("age-key", f"# created: 2026-12-01\n# public key: age1{rand(58, 'qpzry9x8gf2tvdw0s3jn54khce6mua7l')}\n{s}", s)
    s = rand(43, B64) + "="
    add("wireguard-conf", f"[Interface]\nAddress = 10.0.0.2/24\nPrivateKey = {s}\nListenPort = 51820", s)

    # --- tokens by shape ---
    s = jwt()
    add("jwt-bearer-header", f"Authorization: Bearer {s}", s)
    s = jwt()
    add("jwt-session-token-yaml", f"session:\n  session_token: {s}\n", s)
    s = ".".join(rand(6, LOWER) + rand(4, DIGITS) for _ in range(3))
    add("dotted-random-token", f"token: {s}", s)
    s = rand(14, UPPER + LOWER)
    add("spaced-mid-line-token", f"echo GITHUB_TOKEN = ghx{s}{rand(14, UPPER + LOWER)}", s)
    s = b64(f"deploy:{password()}".encode())
    add("basic-auth-header", f"curl -H 'Authorization: Basic {s}' https://ci.acme.io/api", s)
    s = b64(f"acme:{password()}".encode())
    add("docker-config-auth", f'{{\n  "auths": {{\n    "https://index.docker.io/v1/": {{\n      "auth": "{s}"\n    }}\n  }}\n}}', s)
    s = b64(b'{"auths":{"ghcr.io":{"auth":"' + b64(f"bot:{password()}".encode()).encode() + b'"}}}')
    add("k8s-dockerconfigjson", f"data:\n  .dockerconfigjson: {s}\ntype: kubernetes.io/dockerconfigjson", s)

    # --- passwords: assignments, URLs, commands, config files ---
    pw = password()
    add("url-postgres", f"DATABASE_URL=postgres://app:{pw}@db.internal:5432/app", pw)
    pw = password()
    add("url-mongodb-srv", f'client = MongoClient("mongodb+srv://admin:{pw}@cluster0.mongodb.net/prod")', pw)
    pw = password()
    add("jdbc-query", f"jdbc:mysql://db:3306/app?user=app&password={pw}&useSSL=true", pw)
    pw = password()
    add("mssql-connection-string", f"Server=tcp:db.acme.io,1433;Database=app;User Id=sa;Password={pw};Encrypt=true", pw)
    pw = password()
    add("curl-u", f"curl -u admin:{pw} https://jenkins.acme.io/api/json", pw)
    pw = password()
    add("curl-user", f"curl --user deploy:{pw} -X POST https://nexus.acme.io/upload", pw)
    pw = password()
    add("curl-user-equals", f"curl --user=deploy:{pw} https://nexus.acme.io/upload", pw)
    s = b64(f"svc:{password()}".encode())
    add("basic-auth-tuple", f'session.headers.update([("Authorization", "Basic {s}")])', s)
    pw = password()
    add("pgpass", f"db.acme.io:5432:shop:app:{pw}\n*:*:*:replicator:{pw[::-1]}", pw, pw[::-1])
    pw = password()
    add("echo-sudo-S", f"echo '{pw}' | sudo -S systemctl restart nginx", pw)
    pw = password()
    add("echo-password-stdin", f'echo "{pw}" | docker login ghcr.io -u acme --password-stdin', pw)
    pw = password()
    add("requests-auth-tuple", f'r = requests.get(url, auth=("admin", "{pw}"), timeout=10)', pw)
    s = "xoxe-1-" + rand(60)
    add("slack-refresh-token", f"refresh: {s}", s)
    s = "sk-" + rand(48)
    add("os-environ-subscript", f"os.environ['OPENAI_API_KEY'] = '{s}'", s)
    pw = password()
    add("python-env-subscript-password", f'os.environ["DB_PASSWORD"] = "{pw}"', pw)
    pw = password()
    add("k8s-env-name-value", f"env:\n  - name: LOG_LEVEL\n    value: info\n  - name: DB_PASSWORD\n    value: {pw}\n", pw)
    s = rand(40)
    add("ecs-task-json-env", f'"environment": [{{"name": "API_TOKEN", "value": "{s}"}}, {{"name": "REGION", "value": "eu-west-1"}}]', s)
    pw = password()
    add("maven-settings-xml", f"<server>\n  <id>nexus</id>\n  <username>deploy</username>\n  <password>{pw}</password>\n</server>", pw)
    s = rand(32)
    add("dotnet-appsettings-xml", f'<appSettings>\n  <add key="ApiKey" value="{s}" />\n</appSettings>', s)
    pw = password()
    add("curl-clustered-flags", f"curl -sSfu admin:{pw} https://jenkins.acme.io/api/json", pw)
    pw = password()
    add("mysql-p-glued", f"mysql -u root -p{pw} -h 127.0.0.1 shop", pw)
    pw = password()
    add("mysqldump-password-eq", f"mysqldump --password={pw} -u root shop > shop.sql", pw)
    pw = password()
    add("sshpass", f"sshpass -p '{pw}' ssh deploy@10.0.0.5 uptime", pw)
    pw = password()
    add("docker-login-p", f"docker login -u acme -p {pw} registry.gitlab.com", pw)
    pw = password()
    add("redis-cli-a", f"redis-cli -h cache.internal -a {pw} ping", pw)
    pw = password()
    add("redis-conf", f"bind 0.0.0.0\nrequirepass {pw}\nmaxmemory 2gb", pw)
    pw = password()
    add("netrc-one-line", f"machine api.heroku.com login me@acme.io password {pw}", pw)
    pw = password()
    add("netrc-multi-line", f"machine github.com\n  login octocat\n  password {pw}\n", pw)
    pw = password()
    add("openssl-passin", f"openssl rsa -in key.pem -passin pass:{pw} -out plain.pem", pw)
    pw = password()
    add("keytool-storepass", f"keytool -list -keystore app.jks -storepass {pw}", pw)
    pw = password()
    add("smbclient-user-percent", f"smbclient //fs/share -U alice%{pw} -c ls", pw)
    pw = password()
    add("ldapsearch-w", f'ldapsearch -x -D "cn=admin,dc=acme,dc=io" -w {pw} -b "dc=acme,dc=io"', pw)
    pw = password()
    add("export-spaced", f"export DB_PASSWORD = {pw}", pw)
    pw = password()
    add("powershell-env", f'$env:DB_PASSWORD = "{pw}"', pw)
    pw = password()
    add("php-define", f"define( 'DB_PASSWORD', '{pw}' );", pw)
    s = rand(64, ALNUM + "!@#%^*()_+")
    add("wordpress-salt", f"define('AUTH_SALT', '{s}');", s)
    s = rand(128, HEX)
    add("rails-secret-key-base", f"SECRET_KEY_BASE={s}", s)
    s = rand(50, ALNUM + "!@#%^*(-_=+)")
    add("django-secret-key", f"SECRET_KEY = '{s}'", s)
    pw = password()
    add("yaml-password", f"database:\n  user: app\n  password: {pw}\n  host: db", pw)
    pw = password()
    add("properties-password", f"spring.datasource.url=jdbc:postgresql://db/app\nspring.datasource.password={pw}", pw)
    pw = password()
    add("python-kwarg", f'conn = psycopg2.connect(host="db", user="app", password="{pw}")', pw)
    pw = password()
    add("k8s-secret-data", f"kind: Secret\ndata:\n  password: {b64(pw.encode())}\n", b64(pw.encode()))
    s = rand(32)
    add("dockerfile-env-spaced", f"FROM python:3.12\nENV API_TOKEN {s}\nRUN pip install app", s)
    s = rand(32)
    add("gh-secret-set", f'gh secret set DEPLOY_KEY --body "{s}"', s)
    pw = password()
    add("wifi-psk", f'network={{\n    ssid="acme"\n    psk="{pw}"\n}}', pw)
    s = rand(32)
    add("x-api-key-header", f"X-Api-Key: {s}", s)
    pw = password()
    add("db-pass-env", f"SMTP_HOST=smtp.acme.io\nSMTP_PASS={pw}", pw)
    s = rand(40, HEX)
    add("cli-flag-token", f"terraform login --token {s}", s)

    # --- cookies, argv lists, program positionals, HTML forms (found missing by an audit) ---
    s, t = rand(32), rand(43, URLSAFE)
    add("cookie-curl-verbose", f"> GET /account HTTP/2\n> host: shop.acme.io\n> cookie: _session_id={s}; cart={t}\n>\n< HTTP/2 200\n"
        f"< set-cookie: _session_id={s}; path=/; secure; HttpOnly; SameSite=Lax", s, t)
    pw, pw2 = password(), password()
    add("argv-list", f'subprocess.run(["sshpass", "-p", "{pw}", "ssh", "deploy@host"], check=True)\n'
        f'cmd := exec.Command("mysql", "-u", "root", "-p{pw2}", "shop")', pw, pw2)
    pw, pw2 = password(), password()
    add("html-and-spring-xml", f'<form method="post">\n  <input type="password" name="pw" value="{pw}">\n</form>\n'
        f'<bean id="ds" class="com.zaxxer.hikari.HikariDataSource">\n  <property name="password" value="{pw2}"/>\n</bean>', pw, pw2)
    pw, pw2, pw3 = password(), password(), password()
    add("positional-passwords", f"htpasswd -bc /etc/nginx/.htpasswd admin {pw}\nsqlplus app/{pw2}@//db.acme.io:1521/ORCL @migrate.sql\n"
        f"net use Z: \\\\files\\build {pw3} /user:ACME\\ci /persistent:no", pw, pw2, pw3)

    # --- pentest targets, HTTP clients, config commands, other languages' bindings (a review's finds) ---
    pw = password()
    add("impacket-target", f"secretsdump.py -just-dc corp.acme.io/administrator:{pw}@10.0.0.5", pw)
    s = rand(40)
    add("httpie-bearer", f"http -A bearer -a {s} https://api.acme.io/me", s)
    s = rand(40)
    add("git-config-token", f"git config --global github.token {s}", s)
    s, t = rand(40), rand(32)
    add("r-assignments", f'Sys.setenv(GITHUB_PAT = "{s}")\nopenai_key <- "{t}"', s, t)
    s, pw = rand(40), password()
    add("composer-auth-env", f"""COMPOSER_AUTH='{{"github-oauth": {{"github.com": "{s}"}}, "http-basic": {{"repo.acme.io": {{"username": "ci", "password": "{pw}"}}}}}}' composer install""", s, pw)
    pw = password()
    add("openvpn-inline", f"client\nremote vpn.acme.io 1194\n<auth-user-pass>\nalice\n{pw}\n</auth-user-pass>", pw)
    pw, pw2 = password(), password()
    add("server-env", f"SetEnv DB_PASSWORD {pw}\nfastcgi_param APP_SECRET {pw2};", pw, pw2)
    pw, s = password(), rand(32)
    add("ado-and-cookie-parser", f'conn.Open(dsn, "sa", "{pw}")\napp.use(cookieParser("{s}"))', pw, s)
    pw, pw2 = password(), password()
    add("password-check-undeclared", f'if (encoder.matches("{pw}", user.getPasswordHash())) {{\nok = check_password_hash(row.hash, "{pw2}")', pw, pw2)
    pw, pw2 = password(), password()
    add("xhr-open-credentials", f'http.Open "GET", "https://intranet.acme.io/api", False, "svc", "{pw}"\nxhr.open("GET", url, false, "bob", "{pw2}");', pw, pw2)
    pw, pw2 = password(), password()
    add("prose-login-pairs", f"Use admin:{pw} to log in, or log in with ops / {pw2}", pw, pw2)
    s, pw = rand(40), password()
    add("caddy-env", f"acme.io {{\n\tphp_fastcgi unix//run/php/fpm.sock {{\n\t\tenv API_TOKEN {s}\n\t\tenv DB_PASSWORD {pw}\n\t}}\n}}", s, pw)
    s, pw = rand(32), password()
    add("compared-to-literal", f'if token == "{s}":\n    grant()\nif (password.equals("{pw}")) {{', s, pw)
    # (Added last, so that every earlier case keeps its seeded values.)
    pw, pw2 = password(), password()
    add("pgpass-escaped-in-a-string", f'printf "db.acme.io:5432:shop:app:{pw}\\n*:*:*:replicator:{pw2}\\n" >> ~/.pgpass', pw, pw2)
    pw, pw2 = password(), password()
    add("prose-label-comma-pairs", f"creds (user/pass): admin, {pw}\nuser/password: deploy, {pw2}", pw, pw2)
    pw = password()
    add("prose-password-in-a-json-string", f'log "the password is {pw}\\nthanks" and <p>the password is {pw}</p>', pw)
    pw = password()
    add("pgpass-echoed", f"echo 'db.acme.io:5432:shop:app:{pw}' >> ~/.pgpass && chmod 600 ~/.pgpass", pw)
    # A password with punctuation in it, unquoted mid-line: each part must go, the part after the
    # punctuation too.
    head, tail = rand(6), rand(8)
    add("connection-string-punctuated-password", f"Server=db.acme.io;Database=shop;User Id=sa;Password={head}&{tail};Encrypt=true", head, tail)
    head, tail = rand(1), rand(10)
    add("prose-passphrase-with-punctuation", f"the key passphrase: {head};{tail}\nkeep it in the vault", tail)
    pw, pw2 = rand(12), rand(12)
    add("password-opening-like-a-reference", f'{{"password": "${pw}"}}\nDB_PASSWORD="%{pw2}"', pw, pw2)
    return cases


SECRET_CASES: list[SecretCase] = _cases()


def _benign() -> list[tuple[str, str]]:
    sha = lambda: rand(40, HEX)  # noqa: E731
    uuid = lambda: "-".join(rand(n, HEX) for n in (8, 4, 4, 4, 12))  # noqa: E731
    png = b64(b"\x89PNG\r\n\x1a\n" + random_bytes(1500))
    return [
        ("git-log", "".join(f"commit {sha()}\nAuthor: Dev <dev@acme.io>\nDate:   Mon Dec 1\n\n    fix token refresh\n\n" for _ in range(5))),
        ("git-short-shas", " ".join(sha()[:7] for _ in range(20))),
        ("uuids", "\n".join(f"session {uuid()} started, request_id={uuid()}" for _ in range(8))),
        ("sha256sum", "\n".join(f"{rand(64, HEX)}  dist/app-{i}.tar.gz" for i in range(6))),
        ("docker-digests", "\n".join(f"acme/app@sha256:{rand(64, HEX)}" for _ in range(4))),
        ("pip-hashes", f"requests==2.32.3 \\\n    --hash=sha256:{rand(64, HEX)} \\\n    --hash=sha256:{rand(64, HEX)}"),
        ("base64-png", f'<img src="data:image/png;base64,{png}" alt="chart">'),
        ("base64-json-image", f'{{"type": "image", "source": {{"type": "base64", "media_type": "image/png", "data": "{png}"}}}}'),
        ("css-spinkit", ".sk-circle { margin: 40px auto; }\n.sk-circle .sk-child:before { animation: sk-circleBounceDelay 1.2s infinite; }\n"
         ".sk-circle-2x-animation-delay { animation-delay: -1.1s; }\n.sk-fading-circle-12-rotate { transform: rotate(330deg); }\n"
         ".sk-cube-grid-animation-delay-0123456789 { }"),
        ("package-lock", "\n".join(f'    "node_modules/p{i}": {{\n      "version": "1.{i}.0",\n      "resolved": "https://registry.npmjs.org/p{i}/-/p{i}-1.{i}.0.tgz",\n      "integrity": "sha512-{rand(86, B64)}=="\n    }},' for i in range(4))),
        ("yarn-lock", f'lodash@^4.17.21:\n  version "4.17.21"\n  resolved "https://registry.yarnpkg.com/lodash/-/lodash-4.17.21.tgz#{sha()}"\n  integrity sha1-{rand(27, B64)}='),
        ("go-sum", "\n".join(f"github.com/acme/m{i} v1.{i}.0 h1:{rand(43, B64)}=" for i in range(4))),
        ("cargo-lock", f'[[package]]\nname = "serde"\nversion = "1.0.210"\nchecksum = "{rand(64, HEX)}"'),
        ("sri-script", f'<script src="https://cdn.acme.io/app.js" integrity="sha384-{rand(64, B64)}" crossorigin="anonymous"></script>'),
        ("minified-js", 'function l(e,t){e.token=t.token,e.password=t.password||"",e.apiKey=n.apiKey;var r=e.secret?e.secret:o.secret;return r}'
         'var a=function(){return this.accessToken=window.localStorage.getItem("at"),this}'),
        ("python-code", 'def login(user: str, password: str) -> Session:\n    token = self.token\n    api_key = os.environ["OPENAI_API_KEY"]\n'
         '    secret = config.secret\n    headers = {"Authorization": f"Bearer {token}"}\n    return Session(password=password, token=token)'),
        ("ts-code", "interface Cfg { apiKey: string; secret?: string }\nconst apiKey = process.env.API_KEY;\nconst password: string = req.body.password;"),
        ("code-refs", "token = self.token\npassword: os.environ[\"X\"]\napi_key=config.api_key\nsession_token: request.session.token"),
        ("env-dump", "PATH=/usr/local/bin:/usr/bin\nHOME=/home/dev\nPWD=/home/dev/app\nNODE_ENV=production\nMAX_TOKENS=4096\nAPI_KEY=${API_KEY}"),
        ("shell-flags", "mkdir -p build/out && docker run -u 1000:1000 -p 8080:80 acme/app\nssh -p 2222 deploy@host\nps -u root\npip install -U pip\n"
         'curl -u "$USER:$TOKEN" https://api.acme.io\nset -euo pipefail\naws configure set region us-east-1'),
        ("dockerfile", "FROM node:20\nENV NODE_ENV production\nENV PATH /app/node_modules/.bin:$PATH\nARG VERSION=1.2.3\nRUN npm ci"),
        ("ls-and-pytest", "-rw-r--r-- 1 dev dev 4096 Dec  1 21:39 secrets.py\ndrwx------ 2 dev dev 4096 Dec  1 .ssh\n"
         "tests/test_auth.py::test_password_reset PASSED [ 50%]\ntests/test_auth.py::test_token_expiry PASSED [100%]"),
        ("json-ids", f'{{"id": "{rand(32, HEX)}", "etag": "W/\\"{rand(16, HEX)}\\"", "request_id": "req_{rand(24)}", "max_tokens": 1024, "input_tokens": 77}}'),
        ("arns", "arn:aws:iam::123456789012:role/deploy\narn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf"),
        ("public-keys", f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{rand(43, B64)} dev@laptop\n"
         f"-----BEGIN CERTIFICATE-----\n{pem_body(4)}\n-----END CERTIFICATE-----\n-----BEGIN PUBLIC KEY-----\n{pem_body(2)}\n-----END PUBLIC KEY-----"),
        ("prose", "Rotate the API key every 90 days. The password policy needs review, and the token endpoint returns a "
         "bearer token: see RFC 6750. A machine translation of the login page is pending."),
        ("kebab-and-snake", "task-queue-worker-0123456789abcdef test_functions_with_really_long_names_0123456789 sk-learn-pipeline-v2"),
        ("hex-colors-and-versions", "color: #ff00aa; background: #0a0b0c;\nversion 3.11.7 build 2026.12.01-rc1 node v20.11.0"),
        ("placeholders", "OPENAI_API_KEY=YOUR_API_KEY\npassword: <your password>\ntoken: ${TOKEN}\nAWS_SECRET_ACCESS_KEY=xxxxxxxxxxxxxxxx"),
        ("secrets-module", "import secrets\nnonce = secrets.token_hex(32)\nsalt = os.urandom(16)\npassword_hash = bcrypt.hashpw(pw, salt)"),
        ("java-and-shell", "return NotificationServiceFactory.create.buildNotificationServiceWithRetries(cfg);\n"
         'ssh-keygen -t ed25519 -N "" -f deploy_key\nsecurity find-generic-password -s github -w\ncurl -u bob https://api.acme.io\n'
         "kubectl set image deployment/web web=acme/web:1.2\nset -o pipefail\nmysql -u root -p shop"),
        ("times-and-pipes", "12:30:45:10:99 elapsed\n2001:db8:0:0:1 is an address\necho hi | grep h\necho $PW | sudo -S ls\n"
         'f("user", "name") and auth=(user, pw) and session.auth = ("bob", PASSWORD)'),
        ("site-packages-finds", 'salt = "autotune-best-config-v2"\nSuppose we log statistics during the forward pass::\n\n    def f(x):\n'
         "\"bos_token\": SpecialTokens.bos.value,\nEPILOGUE_SEED_SALT = 0x9E3779B1\n__slots__ = ('scheme', 'user', 'password', 'host')\n"
         '@field_serializer(\'password\', \'token\', when_used=\'json\')\n_dedup_rs_pass: PassType | None = None'),
        ("xml-and-env-lookalikes", "<key>value</key><token>next</token>\n<passwordPolicy>strict</passwordPolicy>\n"
         '- name: LOG_LEVEL\n  value: debug\n{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"key": "token"}}}\n'
         "cache[key] = value\nos.environ['API_KEY'] = api_key"),
        ("csv-prose", "Download the .csv: it has the Access key ID, Secret access key and console link.\nKeep it safe, then delete it."),
        ("cookie-lookalikes", "The browser sends the Cookie header; Set-Cookie has Path, Expires and HttpOnly attributes.\n"
         'document.cookie = "theme=dark; path=/";\nWe use cookies: accept all cookies?\ncurl -b cookies.txt -c cookies.txt https://acme.io'),
        ("k8s-meta", f"metadata:\n  uid: {uuid()}\n  resourceVersion: \"{rand(8, DIGITS)}\"\n  generation: 3"),
    ]


BENIGN_CASES: list[tuple[str, str]] = _benign()
