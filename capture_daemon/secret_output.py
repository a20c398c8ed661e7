"""Commands whose output is itself a secret, and that output removed.

`pass show email/gmail` prints a bare password; `op read op://vault/db/password`,
`gcloud secrets versions access latest --secret=db`, `kubectl get secret db -o
jsonpath='{.data.password}' | base64 -d`, `security find-generic-password -s x -w` do the same.
Nothing in such output says "secret" (no name, no prefix, no shape), so no rule over the text
alone can find it: the command that printed it is what says so. Both places a command and its
output meet are covered:

- a Bash tool call: its input's `command` and its result (`scrub.py` calls `output_is_secret`
  for each call, in hook payloads and transcripts alike);
- a terminal session in one text (a pasted `$ pass show x` and the line after it, Claude Code's
  `!` mode turns `<bash-input>...</bash-input><bash-stdout>...</bash-stdout>`; either escaped
  inside a JSON string too, `"$ pass show x\\nPW\\n"` in a transcript's line that grep printed,
  a turn's tags as `\\u003cbash-stdout\\u003e` where the writer escapes HTML):
  `redact_pasted_sessions`, which `redact_text` runs.

What counts (`_SECRET_PRINTERS`): password managers and secret stores read back (pass, gopass,
op, security, secret-tool, keyring, vault, gcloud/aws/az/doppler/heroku/pulumi/terraform secret
reads), decrypting reads (sops -d, gpg -d, ansible-vault view), tokens minted for the caller
(`gh auth token`, `gcloud auth print-access-token`, `kubectl create token`,
`aws ecr get-login-password`), keys generated on the spot (`openssl rand`, `wg genkey`,
`pwgen`), a secret-named variable echoed (`printenv API_KEY`, `echo $DB_PASSWORD`; PowerShell's
`$env:DB_PASSWORD`, `[Environment]::GetEnvironmentVariable("API_TOKEN")`, `$cred.Password`,
`Get-Secret -AsPlainText`; cmd.exe's `echo %DB_PASSWORD%`), and a file
that holds a secret and nothing else printed (`cat /run/secrets/db_password`, `head -c 32
config/master.key`; `file_holds_secret`). A pipeline counts when its first command does, unless
its output goes to a file (`> key.txt`) or is only counted (`| wc -c`). So does one run
elsewhere (`docker exec db printenv POSTGRES_PASSWORD`, `kubectl exec pod -- cat
/run/secrets/x`, `ssh host 'pass show x'`) or in a project's environment (`bundle exec rake
secret`, `poetry run ...`); and more stores (Bitwarden's `bw get password`, `bws secret get`,
`lpass show`, `keepassxc-cli show -s`, chamber, Infisical, Akeyless, berglas), app secrets made on
the spot (`rails secret`, `rails credentials:show`, `mix phx.gen.secret`, `php artisan
key:generate --show`, `head -c 32 /dev/urandom | base64`), initial admin passwords read back
(`argocd admin initial-password`, `elasticsearch-reset-password`), and reads of a secret-named key
(`consul kv get app/db/password`, `etcdctl get /app/api_token`, `git config --get github.token`, any case:
`sendemail.smtppass`), a package manager's registry token read back (`npm config get
//registry.npmjs.org/:_authToken`, `yarn config get npmAuthToken`, `composer config
github-oauth.github.com`, `bundle config get gems.contribsys.com`). Claude Code's Read tool
on such a file counts the same way: its result's content goes, its path and line counts stay.

Files that hold a login (`credential_file`, `named_credential_files`): OpenVPN's `auth-user-pass
creds.txt` file is a user and its password, two lines. A read of one (Read, `cat`, a pasted `$ cat
creds.txt`, a `!cat creds.txt` turn's `<bash-stdout>`) loses the second line, the user kept; a file is one by its name (`creds.txt`,
`vpn-auth.txt`, `x.pass`) or by a config or command in the same session naming it (`auth-user-pass
FILE`, `--password-file FILE`, `passwordfile=`, `PGPASSFILE=`, `--password-stdin < FILE`).
"""

from __future__ import annotations

import bisect
import json
import posixpath
import re
import shlex
from typing import Optional

MARK = "[REDACTED:command-output]"

# pass(1)'s and gopass's commands that print no entry (`pass ls`, `pass git push`); an entry
# alone (`pass email/gmail`) or after `show` is printed.
_PASS_OTHER_COMMANDS = (
    r"(?:ls|list|find|search|grep|insert|add|edit|rm|remove|delete|mv|rename|cp|copy|git|init|help|version"
    r"|sync|mounts|config|setup|recipients|audit|fsck)"
)
# (program, a regex over the words after it). The words are shlex's, flags included; the regex
# runs with `search` over them joined by single spaces.
_SECRET_PRINTERS: tuple[tuple[str, str], ...] = (
    # (`generate` prints the new password.)
    ("pass", rf"^(?:show|otp|generate)\b|^(?!{_PASS_OTHER_COMMANDS}$)[^\s-]\S*$"),
    ("gopass", rf"^(?:show|otp|generate|cat)\b|^(?!{_PASS_OTHER_COMMANDS}$)[^\s-]\S*$"),
    ("op", r"^(?:read\b|inject\b|item get\b.*(?:--fields?|--reveal|--otp)|signin\b.*--raw)"),
    ("security", r"^find-(?:generic|internet)-password\b.*(?:^|\s)-[wg]\b"),
    ("secret-tool", r"^lookup\b"),
    ("keyring", r"^get\b"),
    ("vault", r"^(?:kv get|read|kv-get|print token|token create|write .*(?:-field|-format)|login\b.*-field)\b"),
    ("gcloud", r"^(?:secrets versions access|auth (?:application-default )?print-(?:access|identity)-token)\b"),
    ("aws", r"^(?:secretsmanager get-secret-value|ecr get-login-password|ecr-public get-login-password|ssm get-parameters?(?:-by-path)?\b.*--with-decryption|configure get \S*(?:secret|token|key)|sts get-session-token|codeartifact get-authorization-token|iam create-access-key)\b"),
    ("az", r"^(?:keyvault secret show|keyvault secret download.*--file -|.*\bkeys? list\b|.*\blist-keys\b|acr credential show|account get-access-token|storage account show-connection-string|.*\bshow-connection-string\b|.*\bcredential list\b|ad sp create-for-rbac|ad app credential reset)"),
    # (`doppler secrets` alone prints a table of every secret, values and all.)
    ("doppler", r"^(?:secrets get\b|secrets download\b.*--no-file|secrets(?:\s+--?\S+(?:\s+[^-\s]\S*)?)*\s*$)"),
    ("heroku", r"^(?:auth:token|config:get\b|authorizations:create)"),
    ("pulumi", r"^(?:config get\b|stack output\b.*--show-secrets)"),
    # (`terraform output NAME` prints a sensitive output's value too; all outputs at once show
    # `<sensitive>`. A secret-named one is checked in _prints_secret.)
    ("terraform", r"^output\b.*(?:-raw|-json)"),
    ("sops", r"(?:^|\s)(?:-d|--decrypt)\b"),
    ("gpg", r"(?:^|\s)(?:-d|--decrypt)\b"),
    ("ansible-vault", r"^(?:view\b|decrypt\b.*--output[ =]-)"),
    ("gh", r"^auth token\b"),
    ("fly", r"^auth token\b"),
    ("flyctl", r"^auth token\b"),
    ("firebase", r"^login:ci\b"),
    ("netlify", r"^env:get\b|^env:list\b.*--plain"),
    ("railway", r"^variables\s*$|^variables\s+(?!set\b|delete\b)"),
    ("glab", r"^auth token\b|^config get token\b"),
    ("kubectl", r"^(?:get secrets?\b.*(?:-o|--output)[ =]?(?:jsonpath|go-template|template)|create token\b|view-secret\b)"),
    ("docker-credential-", r"^get\b"),
    ("openssl", r"^rand\b"),
    ("wg", r"^(?:genkey|genpsk)\b|^show\b.*private-key"),
    ("pwgen", r""),
    ("slappasswd", r""),  # an LDAP {SSHA} hash of the password it was given or asked for
    ("rclone", r"^(?:obscure|reveal)\b"),  # a password obscured (reversibly) or revealed
    ("apg", r""),
    # More password managers and secret stores read back: Bitwarden's CLI (`bw get password x`,
    # `bw get item x` with its login), Bitwarden Secrets Manager's `bws secret get`, LastPass's
    # `lpass show`, KeePassXC's `show -s` (protected attributes shown), Segment's chamber,
    # Infisical, Akeyless, berglas.
    ("bw", r"^get\s+(?:password|item|notes|totp|username)\b"),
    ("bws", r"^secret\s+(?:get|list)\b"),
    ("lpass", r"^show\b"),
    ("keepassxc-cli", r"^show\b.*(?:^|\s)(?:-s|--show-protected|-a\s+[Pp]assword|--attributes[ =][Pp]assword)\b"),
    ("chamber", r"^(?:read|export|env)\b"),
    ("infisical", r"^(?:secrets\s+get\b|export\b|secrets\s*$|secrets\s+--)"),
    ("akeyless", r"^get-(?:secret|rotated-secret|dynamic-secret)-value\b"),
    ("berglas", r"^access\b"),
    # Secrets generated on the spot for an app: Rails's `secret` and `credentials:show` (every
    # credential in clear), Rake's `secret`, Phoenix's `phx.gen.secret`, Laravel's `key:generate --show`.
    ("rails", r"^(?:secret|credentials:show)\b"),
    ("rake", r"^secret\b"),
    ("mix", r"^phx\.gen\.secret\b"),
    ("php", r"^artisan\s+key:generate\b.*--show"),
    # Initial admin passwords read back or reset: Argo CD's, Elasticsearch's (`New value: pw`).
    ("argocd", r"^admin\s+initial-password\b"),
    ("elasticsearch-reset-password", r""),
)
_PRINTERS = tuple((name, re.compile(pattern)) for name, pattern in _SECRET_PRINTERS)
# docker-credential-desktop, -osxkeychain, -pass, -secretservice, -ecr-login...
_PROGRAM_PREFIXES = ("docker-credential-",)
# Output counted or hashed, not shown: `pass show x | wc -c`, `| sha256sum`, `| md5sum`.
_OUTPUT_HIDDEN_BY = re.compile(r"^(?:wc|sha\d*sum|md5sum|shasum|cksum|b2sum|true|false)$")
_ENV_READERS = frozenset({"printenv", "echo", "printf", "write-output", "write-host"})
_WRAPPERS = frozenset({"sudo", "env", "command", "exec", "time", "nice", "nohup", "doas"})
# Two words that run the next as it is, in a project's environment.
_RUNNERS = frozenset({("bundle", "exec"), ("poetry", "run"), ("uv", "run"), ("pipenv", "run"), ("pdm", "run"), ("pnpm", "exec"),
                      ("yarn", "exec"), ("npm", "exec"), ("hatch", "run"), ("rye", "run")})
# `$NAME`, `${NAME}`, PowerShell's `$env:NAME` and `${env:NAME}`, cmd.exe's `%NAME%`.
_VARIABLE = re.compile(r"\$\{?(?:(?i:env):)?([A-Za-z_][A-Za-z0-9_]*)\}?|%([A-Za-z_][A-Za-z0-9_]*)%")
# PowerShell: `$env:DB_PASSWORD` typed alone prints it; so do
# `[Environment]::GetEnvironmentVariable("API_TOKEN")` and a secret-named property read at the
# prompt (`$cred.GetNetworkCredential().Password`, `$secret.SecretValueText`).
_PS_ENV_READ = re.compile(r"(?i)^\$\{?env:([A-Za-z_]\w*)\}?$|^\[(?:System\.)?Environment\]::GetEnvironmentVariable\(\s*([A-Za-z_]\w*)")
_PS_PROPERTY = re.compile(r"^[$(][^\s]*\.([A-Za-z_]\w*)$")
# PowerShell cmdlets that print a secret in the clear when told to (`-AsPlainText`).
_PS_PLAIN_TEXT_READERS = frozenset({"get-secret", "get-azkeyvaultsecret", "convertfrom-securestring"})


def _pipelines(command: str) -> list[list[list[str]]]:
    """`command`'s pipelines, each a list of stages, each a list of words: shell quoting
    respected (`python -c "a; b"` is one command), control operators and pipes split on,
    redirections kept as words of their own (`>`, `>>`)."""
    pipelines: list[list[list[str]]] = []
    for line in command.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # an unclosed quote: word by word, as near as can be told
            tokens = line.split()
        stages: list[list[str]] = [[]]
        for token in tokens:
            if token in (";", "&&", "||", "&"):
                pipelines.append(stages)
                stages = [[]]
            elif token in ("|", "|&"):
                stages.append([])
            else:
                stages[-1].append(token)
        pipelines.append(stages)
    return [[stage for stage in p if stage] for p in pipelines if any(p)]


# sudo's flags that take a value (`sudo -u app printenv X`).
_WRAPPER_FLAGS_WITH_VALUE = frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t", "-n"})


def _program(words: list[str]) -> tuple[str, list[str]]:
    """The program a command runs (past `sudo -u x`, `env X=1`, `X=1`, a path) and the words after it."""
    i = 0
    while i < len(words):
        word = words[i]
        if word in _WRAPPERS:
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in _WRAPPER_FLAGS_WITH_VALUE and word != "nice" else 1
        elif "=" in word and not word.startswith("-") and re.match(r"^[A-Za-z_]\w*=", word):
            i += 1  # FOO=1 cmd
        elif i + 1 < len(words) and (word, words[i + 1]) in _RUNNERS:
            i += 2  # bundle exec rake secret, poetry run python -c ...
        else:
            break
    if i >= len(words):
        return "", []
    return words[i].rsplit("/", 1)[-1], words[i + 1 :]


# --- Files whose whole content is a secret: reading one prints it bare, with no name beside it.
# Docker and Kubernetes mount secrets as files (`/run/secrets/db_password`, a service account's
# `token`); Rails keeps its master key as 32 hex characters in `config/master.key`; Vault's CLI
# its token in `~/.vault-token`; Ansible its vault password in a file named so.
_SECRET_MOUNT = re.compile(r"(?:^|/)(?:var/)?run/secrets/")
_PUBLIC_IN_SECRET_MOUNTS = frozenset({"ca.crt", "namespace", "service-ca.crt"})
_SECRET_FILE_NAMES = frozenset({".vault-token"})
# Named like a secret, but no secret at all (/etc/passwd), or lines the text rules already redact
# field by field, keeping the rest (htpasswd's `user:hash`).
_NOT_BARE_SECRETS = frozenset({"passwd", "htpasswd"})
# A secret's name with one of these (or none) is a file holding just that secret: `db_password`,
# `api-token.txt`, `.vault_pass`. `password.py` or `token_test.go` is code about one.
_BARE_SECRET_SUFFIXES = frozenset({"", ".txt", ".secret", ".token", ".pass", ".pw", ".b64"})
# Programs that print a file named among their arguments (PowerShell's names lower-cased).
_FILE_PRINTERS = frozenset({
    "cat", "head", "tail", "tac", "nl", "less", "more", "bat", "batcat", "xxd", "od", "hexdump", "strings",
    "base64", "sed", "awk", "cut", "get-content", "gc", "type",
})


def file_holds_secret(path: object) -> bool:
    """Whether the file at `path` is, by its name or place, a secret and nothing else."""
    if not isinstance(path, str) or not path.strip():
        return False
    path = path.strip().replace("\\", "/")
    name = path.rsplit("/", 1)[-1].lower()
    if not name:
        return False
    if _SECRET_MOUNT.search(path.lower()):
        return name not in _PUBLIC_IN_SECRET_MOUNTS
    if name in _SECRET_FILE_NAMES or (name.endswith(".key") and "pub" not in name):
        return True  # (.key: a TLS private key, a Rails master or credentials key)
    stem, suffix = posixpath.splitext(name)  # ".vault_pass" → (".vault_pass", "")
    stem = stem.lstrip(".")
    from capture_daemon.redact import is_secret_name  # (redact imports this module)

    return suffix in _BARE_SECRET_SUFFIXES and stem not in _NOT_BARE_SECRETS and is_secret_name(stem)


def _prints_secret(program: str, args: list[str]) -> bool:
    if program.lower() in _FILE_PRINTERS and any(file_holds_secret(a) for a in args if not a.startswith("-")):
        return True  # cat /run/secrets/db_password, head -c 32 config/master.key
    joined = " ".join(args)
    for name, pattern in _PRINTERS:
        matches_program = program.startswith(name) if name in _PROGRAM_PREFIXES else program == name
        if matches_program and pattern.search(joined):
            return True
    from capture_daemon.redact import is_secret_name  # (redact imports this module)

    if program.lower() in _ENV_READERS:
        names = args if program == "printenv" else [v for a in args for g in _VARIABLE.findall(a) for v in g if v]
        return any(is_secret_name(n) for n in names)
    ps = _PS_ENV_READ.match(program) or _PS_PROPERTY.match(program)
    if ps and any(is_secret_name(n) for n in ps.groups() if n):
        return True  # $env:DB_PASSWORD, [Environment]::GetEnvironmentVariable("API_TOKEN"), $c.Password
    if program.lower() in _PS_PLAIN_TEXT_READERS and any(a.lower() == "-asplaintext" for a in args):
        return True  # Get-Secret -Name db -AsPlainText
    if program == "terraform" and args[:1] == ["output"] and any(is_secret_name(a) for a in args[1:] if not a.startswith("-")):
        return True  # terraform output db_password
    if program in ("python", "python3", "node", "ruby") and re.search(r"secrets\.token_|token_urlsafe|token_hex|randomBytes\(|SecureRandom\.", joined):
        return True  # python -c "import secrets; print(secrets.token_urlsafe(32))"
    if program.lower() in _FILE_PRINTERS and any(a in ("/dev/urandom", "/dev/random") for a in args):
        return True  # head -c 32 /dev/urandom | base64: a key made on the spot, as `openssl rand`'s
    if program == "tr" and "/dev/urandom" in args:
        return True  # tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 24
    # A key-value store's or git's config read of a secret-named key: `consul kv get app/db/password`,
    # `etcdctl get /app/api_token --print-value-only`, `git config --get github.token`.
    if (program == "consul" and args[:2] == ["kv", "get"]) or (program == "etcdctl" and args[:1] == ["get"]) or (
        program == "git" and args[:1] == ["config"]
    ):
        keys = [a for a in args[1:] if not a.startswith("-") and a not in ("get", "kv")]
        if program == "git" and len(keys) == 1 and _GIT_SECRET_KEY.search(keys[0]):
            return True  # git config sendemail.smtppass (git's keys are case-blind: smtpPass)
        if program == "git" and keys and keys[0].lower().endswith(".signingkey"):
            return False  # user.signingkey: a GPG key's id or an SSH key's path
        return bool(keys) and len(keys) <= (1 if program != "git" else 1) and is_secret_name(re.split(r"[/.]", keys[0].rstrip("/"))[-1])
    # A package manager's config read of its registry token: `npm config get //registry.npmjs.org/:_authToken`,
    # `yarn config get npmAuthToken`, `pnpm config get ...`; Composer's `config [--global]
    # github-oauth.github.com` (a key alone, no value, prints it); Bundler's `bundle config get HOST`.
    if program in ("npm", "yarn", "pnpm") and (args[:2] == ["config", "get"] or args[:1] == ["get"]):
        keys = [a for a in args[1:] if not a.startswith("-") and a != "get"]
        return len(keys) == 1 and is_secret_name(re.split(r"[/.:]", keys[0].rstrip("/"))[-1])
    if program == "composer" and args[:1] == ["config"]:
        keys = [a for a in args[1:] if not a.startswith("-")]
        return len(keys) == 1 and re.match(r"(?:github-oauth|gitlab-oauth|gitlab-token|bitbucket-oauth|http-basic|bearer)\.", keys[0]) is not None
    if program == "bundle" and args[:2] == ["config", "get"]:
        keys = [a for a in args[2:] if not a.startswith("-")]
        return len(keys) == 1 and "." in keys[0]
    return False


# A git key whose last part ends in a secret's word, in any case: `github.token`, `hub.oauthtoken`,
# `sendemail.smtppass`, `imap.pass` (not `user.signingkey`: a key's id).
_GIT_SECRET_KEY = re.compile(r"\.[\w-]*(?i:token|pass|password|passwd|secret)$")


def _stdout_redirected(words: list[str]) -> bool:
    """`pass show x > f`, `>> f`, `&> f`: printed into a file. (`2> f` moves stderr alone.)"""
    for i, word in enumerate(words):
        if word in (">", ">>", ">|", "&>", "&>>") and not (i > 0 and words[i - 1] == "2" and word != "&>"):
            return True
    return False


# Commands that run another one somewhere else, and the flags of theirs that take a value:
# `docker exec db printenv POSTGRES_PASSWORD`, `kubectl exec pod -- cat /run/secrets/x`, `ssh host
# 'pass show x'`. What the inner command prints is printed here.
_EXEC_VALUE_FLAGS = frozenset({"-u", "--user", "-e", "--env", "-w", "--workdir", "--env-file", "--detach-keys", "--index"})
_SSH_VALUE_FLAGS = frozenset({"-p", "-i", "-l", "-o", "-J", "-F", "-L", "-R", "-D", "-c", "-m", "-b", "-E", "-e", "-S", "-W", "-w",
                              "-Q", "-O", "-B", "-I"})


def _remote_command(program: str, args: list[str]) -> Optional[list[str]]:
    """The words of the command that `program args` runs elsewhere, or None."""
    if program == "kubectl" and args[:1] == ["exec"] and "--" in args:
        return args[args.index("--") + 1 :]
    rest = None
    if program in ("docker", "podman", "nerdctl") and args[:1] == ["exec"]:
        rest = args[1:]
    elif program in ("docker", "podman") and args[:2] == ["compose", "exec"] or program == "docker-compose" and args[:1] == ["exec"]:
        rest = args[2:] if program != "docker-compose" else args[1:]
    if rest is not None:
        i = 0
        while i < len(rest) and rest[i].startswith("-"):
            i += 2 if rest[i] in _EXEC_VALUE_FLAGS else 1
        return rest[i + 1 :]  # past the container or service
    if program == "ssh":
        i = 0
        while i < len(args) and args[i].startswith("-"):
            i += 2 if args[i] in _SSH_VALUE_FLAGS else 1
        inner = args[i + 1 :]
        return inner[0].split() + inner[1:] if len(inner) == 1 else inner  # ssh host 'cat /x': one word
    return None


def _pipeline_prints_secret(stages: list[list[str]]) -> bool:
    if _stdout_redirected(stages[0]):
        return False
    program, args = _program(stages[0])
    inner = _remote_command(program, args)
    if inner:
        program, args = _program(inner)
    if not program or not _prints_secret(program, args):
        return False
    for stage in stages[1:]:
        later, _ = _program(stage)
        if _OUTPUT_HIDDEN_BY.match(later) or _stdout_redirected(stage):
            return False
    return True


def command_prints_secret(command: str) -> bool:
    """Whether `command` (a shell command line, maybe several) shows a secret on its output."""
    if not isinstance(command, str) or not command.strip():
        return False
    return any(_pipeline_prints_secret(stages) for stages in _pipelines(command))


# --- Files that hold a login: a user on the first line, its password on the second, as OpenVPN's
# `auth-user-pass creds.txt` reads it (and `http-proxy-user-pass`, strongSwan's and many scripts'
# own). Nothing in `alice\nZq8vLm2pXw` says secret; the file does, by its name (`creds.txt`,
# `vpn-auth.txt`, `openvpn.pass`) or by a config or command in the same trace naming it
# (`auth-user-pass /etc/openvpn/client.txt`, `--password-file pw.txt`, `PGPASSFILE=...`). Such a
# file's content is judged: two lines, a user and one word, lose the second; one word alone in a
# file named for a password, or named by a password-file option, goes whole. Anything else in it
# (an INI file, `~/.aws/credentials`) is left to the rules over text.
_CREDENTIAL_WORDS = frozenset({"creds", "cred", "credential", "credentials", "password", "passwords", "pass", "pw", "pwd", "auth",
                               "userpass", "login", "logins"})
_CREDENTIAL_SUFFIXES = frozenset({".pass", ".pw", ".pwd", ".passwd", ".creds", ".cred", ".credentials", ".auth", ".login"})
_PASSWORD_SUFFIXES = frozenset({".pass", ".pw", ".pwd", ".passwd"})
_CREDENTIAL_STEM_SUFFIXES = frozenset({"", ".txt", ".conf", ".cfg"})
_NAME_PARTS = re.compile(r"[._-]+")


def _file_name(path: object) -> str:
    if not isinstance(path, str):
        return ""
    return path.strip().strip("\"'").replace("\\", "/").rsplit("/", 1)[-1].lower()


def credential_file(path: object) -> bool:
    """Whether the file at `path` is named as one holding a login (`creds.txt`, `vpn-auth.txt`, `x.pass`)."""
    name = _file_name(path)
    stem, suffix = posixpath.splitext(name)
    if suffix in _CREDENTIAL_SUFFIXES:
        return True
    return suffix in _CREDENTIAL_STEM_SUFFIXES and any(w in _CREDENTIAL_WORDS for w in _NAME_PARTS.split(stem.lstrip(".")))


# Options and settings that name a file holding a login or a password: OpenVPN's `auth-user-pass
# FILE` (`--auth-user-pass`, `http-proxy-user-pass`), `--password-file FILE` and its spellings
# (`--passwordfile`, `--passfile`, `--pass-file`, `--secret-file`, rsync's `--password-file=`),
# `passwordfile = FILE` in a config, libpq's `PGPASSFILE=FILE`, `docker login --password-stdin < FILE`.
_NAMING_OPTION = re.compile(
    r"(?:(?:(?<![\w-])|(?<=--))(?:auth-user-pass|http-proxy-user-pass)[ \t]+"
    r"|--?(?:password[-_]?file|pass[-_]?file|secret[-_]?file|pw[-_]?file)(?:[ \t]+|=)"
    r"|(?<![\w-])(?i:password[-_]?file|pgpassfile|passfile)[ \t]*[=:][ \t]*"
    r"|--password-stdin[ \t]*<[ \t]*)"
    r"(?:\"(?P<dq>[^\"\r\n]{1,300})\"|'(?P<sq>[^'\r\n]{1,300})'|(?P<file>[^\s\"'<>;|&\\]*[^\s\"'<>;|&\\.,)]))"
)


def named_credential_files(texts: "list[str]") -> set[str]:
    """The file names (lower-cased, without their directory) that `texts` name as holding a login."""
    names: set[str] = set()
    for text in texts:
        if isinstance(text, str) and ("pass" in text or "PASS" in text or "Pass" in text):
            for m in _NAMING_OPTION.finditer(text):
                name = _file_name(m.group("file") or m.group("dq") or m.group("sq"))
                if name and name not in ("stdin", "-", "/dev/stdin"):
                    names.add(name)
    return names


# Read's line numbers (`     1\t`, `     1→`) are kept.
_NUMBERED_LINE = re.compile(r"( *\d+(?:\t|\u2192))?(.*?)(\r?)$")
_LOGIN_USER = re.compile(r"[\w.@+\\-]{1,128}")
_LOGIN_WORD = re.compile(r"\S{1,256}")


def mark_credential_lines(text: str, password_file: bool = False) -> str:
    """`text`, a credential file's content, with its password replaced: the second of two lines
    (a user, then one word), or the one word of a password file (`password_file`). Any other
    content comes back as it is."""
    if not isinstance(text, str) or "\n" not in text.strip() and not password_file:
        return text
    lines = text.split("\n")
    filled = [i for i, line in enumerate(lines) if line.strip() and _NUMBERED_LINE.fullmatch(line).group(2).strip()]
    parts = [_NUMBERED_LINE.fullmatch(lines[i]) for i in filled]
    if len(parts) == 2 and _LOGIN_USER.fullmatch(parts[0].group(2).strip()) and _LOGIN_WORD.fullmatch(parts[1].group(2).strip()):
        target, part = filled[1], parts[1]
    elif len(parts) == 1 and password_file and _LOGIN_WORD.fullmatch(parts[0].group(2).strip()):
        target, part = filled[0], parts[0]
    else:
        return text
    if MARKER_PATTERN.fullmatch(part.group(2).strip()):
        return text
    lines[target] = (part.group(1) or "") + MARK + part.group(3)
    return "\n".join(lines)


def read_file_paths(tool_name: object, tool_input: object) -> list[str]:
    """The files a tool call prints: Read's `file_path`, or a Bash command's printer's arguments (`cat creds.txt`)."""
    if not isinstance(tool_input, dict):
        return []
    if tool_name == "Read":
        path = tool_input.get("file_path")
        return [path] if isinstance(path, str) else []
    command = tool_input.get("command") if tool_name in ("Bash", "PowerShell") else None
    return command_read_paths(command) if isinstance(command, str) else []


def command_read_paths(command: str) -> list[str]:
    """The files a shell command prints whole (`cat creds.txt`, `sudo head /etc/openvpn/auth.txt`)."""
    paths: list[str] = []
    for stages in _pipelines(command):
        if len(stages) != 1 or _stdout_redirected(stages[0]):
            continue  # (piped on, it is no longer the file as it is)
        program, args = _program(stages[0])
        if program.lower() in ("cat", "type", "get-content", "gc", "bat", "batcat", "less", "more", "head", "tail"):
            paths += [a for a in args if not a.startswith("-") and not a.isdigit()]
    return paths


def credential_read(tool_name: object, tool_input: object, named: "set[str]" = frozenset()) -> Optional[bool]:
    """For a tool call that prints a credential file: whether it is a password file (its one word
    goes) or a login file (False: the second of two lines goes); None when it prints none."""
    found: Optional[bool] = None
    for path in read_file_paths(tool_name, tool_input):
        name = _file_name(path)
        if name in named:
            return True  # (named by `auth-user-pass` or by `--password-file`: either content goes)
        if credential_file(path):
            found = posixpath.splitext(name)[1] in _PASSWORD_SUFFIXES
    return found


def mark_credential_output(response: object, password_file: bool) -> object:
    """A tool's result (text, a hook's structured response, content blocks) with a credential
    file's password replaced (`mark_credential_lines`)."""
    if isinstance(response, str):
        return mark_credential_lines(response, password_file)
    if isinstance(response, dict):
        out = dict(response)
        for key in ("stdout", "output", "content"):
            if isinstance(out.get(key), str):
                out[key] = mark_credential_lines(out[key], password_file)
        read = out.get("file")
        if isinstance(read, dict) and isinstance(read.get("content"), str):
            out["file"] = {**read, "content": mark_credential_lines(read["content"], password_file)}
        return out
    if isinstance(response, list):
        return [
            {**item, "text": mark_credential_lines(item["text"], password_file)} if isinstance(item, dict) and isinstance(item.get("text"), str) else item
            for item in response
        ]
    return response


def output_is_secret(tool_name: object, tool_input: object) -> bool:
    """Whether a tool call's output is a secret because of the command it ran or the file it read."""
    if not isinstance(tool_input, dict):
        return False
    if tool_name == "Read":
        return file_holds_secret(tool_input.get("file_path"))
    if tool_name not in ("Bash", "PowerShell"):
        return False
    return command_prints_secret(tool_input.get("command", ""))


def mark_secret_output(payload: object) -> object:
    """A PostToolUse payload with its `tool_response` marked when its command prints a secret,
    or with the password gone when it prints a credential file; anything else as it is (the
    caller's dict is not changed). The credential files it names are remembered for its session."""
    remember_named_files(payload)
    if isinstance(payload, dict) and isinstance(payload.get("prompt"), str) and "<bash-stdout>" in payload["prompt"]:
        # (A prompt's `!cat up.dat` turn: the file a config read earlier named.)
        payload = {**payload, "prompt": mark_bash_mode_credentials(payload["prompt"], _named_in_session(payload.get("session_id")))}
    if isinstance(payload, dict) and "tool_response" in payload and output_is_secret(payload.get("tool_name"), payload.get("tool_input")):
        return {**payload, "tool_response": mark_response(payload["tool_response"])}
    if isinstance(payload, dict) and "tool_response" in payload:
        password_file = credential_read(payload.get("tool_name"), payload.get("tool_input"), _named_in_session(payload.get("session_id")))
        if password_file is not None:
            return {**payload, "tool_response": mark_credential_output(payload["tool_response"], password_file)}
    return payload


# Hook payloads come one at a time: the credential files a session's earlier payloads named
# (`auth-user-pass creds.txt` in a config it read), kept for its later reads. A few sessions, a
# few names each: a daemon sees one or two sessions at once.
_SESSION_NAMES: dict[str, set[str]] = {}
_MAX_SESSIONS, _MAX_NAMES = 64, 64


def remember_named_files(payload: object) -> None:
    """Note the credential files a hook payload names, for its session's later payloads."""
    if isinstance(payload, dict):
        remember_names(payload.get("session_id"), named_credential_files(strings_in(
            [payload.get("tool_input"), payload.get("tool_response"), payload.get("prompt")])))


def remember_names(session_id: object, names: "set[str]") -> set[str]:
    """Add `names` to those a session named before; all of them back."""
    if not isinstance(session_id, str):
        return set(names)
    if names:
        if session_id not in _SESSION_NAMES and len(_SESSION_NAMES) >= _MAX_SESSIONS:
            _SESSION_NAMES.pop(next(iter(_SESSION_NAMES)))
        known = _SESSION_NAMES.setdefault(session_id, set())
        if len(known) < _MAX_NAMES:
            known.update(names)
    return _SESSION_NAMES.get(session_id, set()) | names


def _named_in_session(session_id: object) -> set[str]:
    return _SESSION_NAMES.get(session_id, set()) if isinstance(session_id, str) else set()


def strings_in(value: object) -> list[str]:
    """Every string in a JSON-like value."""
    return _strings(value)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def mark_response(response: object) -> object:
    """A Bash tool call's result with what it printed replaced: stdout (text or a hook's
    structured response); stderr, exit status and flags stay, as they say how the call went."""
    if isinstance(response, str):
        return MARK if response.strip() else response
    if isinstance(response, dict):
        out = dict(response)
        for key in ("stdout", "output", "content"):
            if isinstance(out.get(key), str) and out[key].strip():
                out[key] = MARK
        read = out.get("file")  # Read's {"type": "text", "file": {"filePath", "content", ...}}
        if isinstance(read, dict) and isinstance(read.get("content"), str) and read["content"].strip():
            out["file"] = {**read, "content": MARK}
        return out
    if isinstance(response, list):  # content blocks [{"type": "text", "text": ...}]
        return [
            {**item, "text": MARK} if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"].strip() else item
            for item in response
        ]
    return response


# --- A terminal session inside one text: a prompt line running a secret printer, and what it
# printed, up to the next prompt or a blank line. Prompts: `$ `, `% `, `❯ `, `user@host:~/dir$ `,
# PowerShell's `PS C:\> `, `PS /home/me> ` and `PS> `, cmd.exe's `C:\Users\me>` (a space after
# it or none) (not `# ` or `> `: comments and quotes start so); also Claude Code's `!` turns.
_PROMPT = r"[ \t]*(?:(?:[\w.-]+@[\w.-]+(?::[^\s$#%>]*)?[ \t]*[$#%]|PS(?: [^\r\n>]*)?>|[$%❯])[ \t]+|[A-Za-z]:\\[^\r\n<>|\"*?]*>[ \t]*)"
# (Matched at a line's start, found from a `_PROMPTED_PRINTERS` hit on it.)
_PROMPT_LINE = re.compile(
    rf"(?P<prompt>{_PROMPT})(?P<cmd>[^\r\n]+)\r?\n(?P<out>(?:(?!{_PROMPT})[^\r\n]*\S[^\r\n]*(?:\r?\n|\Z))+)"
)
# (Between the tags, a JSON string's escaped line break too: a turn inside a transcript's line.)
def _bash_mode_turn(lt: str, gt: str) -> "re.Pattern[str]":
    """A `!` turn's regex, its tags' angle brackets written `lt` and `gt`. Neither its command nor
    its output runs past the next turn's opening tag: read to the text's end from every opening
    tag that has no closing one, a text of them took minutes (`"<bash-input>" * 20_000`)."""
    command = rf"(?:(?!{lt}bash-input{gt}).)*?"
    output = rf"(?:(?!{lt}bash-(?:input|stdout){gt}).)*?"
    return re.compile(
        rf"{lt}bash-input{gt}(?P<cmd>{command}){lt}/bash-input{gt}(?P<between>(?:\s|\\[nrt])*)"
        rf"{lt}bash-stdout{gt}(?P<out>{output}){lt}/bash-stdout{gt}",
        re.DOTALL,
    )


_BASH_MODE = _bash_mode_turn("<", ">")
# The same turn in a JSON string whose writer escapes HTML (Go's encoding/json): `<` is `\u003c`, `>` `\u003e`.
_BASH_MODE_TAGS_ESCAPED = _bash_mode_turn(r"\\u003[cC]", r"\\u003[eE]")
# Where a prompt line may start, found before `_PROMPT_LINE` runs: a prompt's last character, then a printer's name.
# (PowerShell's cmdlets in the case people type them; `$env:`, `[Environment]` and `$x.Password`
# start with `$` or `[`.)
_PROGRAM_NAMES = sorted({name for name, _ in _SECRET_PRINTERS} | (_ENV_READERS - {"write-output", "write-host"})
                        | {"python", "python3"} | (_FILE_PRINTERS - {"get-content"})
                        | {"Get-Content", "Write-Output", "Write-Host", "Get-Secret", "Get-AzKeyVaultSecret", "ConvertFrom-SecureString"},
                        key=len, reverse=True)
_AFTER_PROMPT = (
    r"(?:[ \t]+|(?<=[\w.~)]>))(?:[A-Za-z_]\w*=\S*[ \t]+|(?:sudo|env)[ \t]+(?:-\S+[ \t]+)*)*(?:[\w.~/\\:-]*[/\\])?(?:"
    + "|".join(re.escape(name) for name in _PROGRAM_NAMES)
    + r"|\$\{?(?i:env):|\[(?:System\.)?Environment\]::|\$[\w.()]+\.[A-Za-z_]\w*[ \t]*\r?\n)"
)
# One regex per prompt character, each starting with it as a literal: the engine scans for a
# literal several times faster than for a character set (`[$%❯#>]` ran at ~100 MB/s).
_PROMPTED_PRINTERS = tuple((c, re.compile(re.escape(c) + _AFTER_PROMPT)) for c in "$%❯#>")


# Any rule's marker, `[REDACTED:kind]` (this module sits below redact.py, which imports it).
MARKER_PATTERN = re.compile(r"\[REDACTED:[\w-]+\]")


def _already_marked(output: str) -> bool:
    """Nothing printed, or nothing but what a rule over the text replaced already (the token
    `aws ecr get-login-password` printed is an [aws-ecr-token] by its shape)."""
    return not MARKER_PATTERN.sub("", output).strip()


def redact_pasted_sessions(text: str) -> tuple[str, int]:
    """`text` with the output of each secret printer in a terminal session replaced."""
    count = 0
    if "<bash-stdout>" in text:
        # (`!cat client.ovpn` printing `auth-user-pass up.dat`, then `!cat up.dat`: a file it names.)
        text, count = _redact_bash_mode(text, named_credential_files([text]))
    if "bash-stdout\\u003" in text:
        text, more = _redact_bash_mode(text, named_credential_files([text]), _BASH_MODE_TAGS_ESCAPED)
        count += more
    # (No quicker test first: the prompt regexes scan for their literal first characters in C,
    # faster than the substring tests that used to pick texts for them.)
    lines, escaped_lines = "\n" in text, "\\n" in text
    hits = _printer_hits(text) if lines or escaped_lines else []
    if hits and lines:
        text, more = _redact_prompted_output(text, hits)
        count += more
        if more and escaped_lines:
            hits = _printer_hits(text)  # (the text moved)
    if hits and escaped_lines:
        # A session escaped inside a JSON string: its lines end in `\n` escapes.
        text, more = _redact_escaped_sessions(text, hits)
        count += more
    return text, count


def _printer_hits(text: str) -> list[int]:
    """Where a prompt's last character stands before a printer's name, in order (see `_PROMPTED_PRINTERS`)."""
    return sorted(m.start() for c, printer in _PROMPTED_PRINTERS if c in text for m in printer.finditer(text))


def _redact_bash_mode(text: str, named: "set[str]" = frozenset(), turns: "re.Pattern[str]" = _BASH_MODE) -> tuple[str, int]:
    """Claude Code's `!` turns: `<bash-input>CMD</bash-input><bash-stdout>OUT</bash-stdout>`: a
    secret printer's output goes, and a credential file's password (`!cat creds.txt`: a user, then
    its password), as for a Bash tool call; `named`, the files the session named as holding a login.
    A turn escaped inside a JSON string (see `_escaped_turn`) is judged as the text it stands for;
    `turns`, `_BASH_MODE_TAGS_ESCAPED` for one whose tags are `\\u003c`-escaped too (kept as written)."""
    count = 0

    def turn(m: "re.Match[str]") -> str:
        nonlocal count
        decoded = _escaped_turn(m)
        command, output = decoded or (m.group("cmd"), m.group("out"))
        if _already_marked(output):
            return m.group(0)
        if command_prints_secret(command):
            out = MARK
        else:
            marked = _credential_session_output(command, output, named)
            if marked is None:
                return m.group(0)
            out = marked if decoded is None else _escaped_lines_replaced(m.group("out"), marked)
        count += 1
        return text[m.start() : m.start("out")] + out + text[m.end("out") : m.end()]

    return turns.sub(turn, text), count


# A `!` turn inside a JSON string that is no whole document, so that redact.py's JSON view never
# parses it (a transcript's line in grep's output, a hook payload echoed into a file, a fixture in
# code): its line breaks are `\n` escapes and its quotes `\"`, so the file's lines and the
# command's words are only there once the escapes are read. A turn counts as escaped where it holds
# a backslash and reads as a JSON string's content (a raw line break or a lone `"` does not).
_JSON_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _json_string_content(raw: str) -> Optional[str]:
    """`raw` read as the inside of a JSON string; None where it is none."""
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _escaped_turn(m: "re.Match[str]") -> Optional[tuple[str, str]]:
    """A `!` turn's command and output as the text they stand for, where the turn is escaped in a
    JSON string; None where it is not."""
    if "\\" not in m.group(0):
        return None
    command, output = _json_string_content(m.group("cmd")), _json_string_content(m.group("out"))
    return None if command is None or output is None else (command, output)


def _escaped_lines(raw: str) -> list[str]:
    """`raw`, a JSON string's content, cut at its `\\n` escapes (an escaped backslash before an `n` is none)."""
    lines, start = [], 0
    for e in _JSON_ESCAPE.finditer(raw):
        if e.group(0) == "\\n":
            lines.append(raw[start : e.start()])
            start = e.end()
    lines.append(raw[start:])
    return lines


def _escaped(text: str) -> str:
    """`text` written as a JSON string's content."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _escaped_lines_replaced(raw: str, marked: str) -> str:
    """`raw`, an escaped text, with the lines that `marked` (its text, marked) changed written anew,
    escaped; every other line keeps its own escapes (`\\u00e9`, `\\/`), byte for byte. A line of
    `marked` takes the raw line it equals next, so that a session's output of several lines may
    become one marker (a line a `\\u000a` escape broke equals none: it is written anew). Whatever
    the pairing, the result reads as `marked`: only an equal line's raw form is ever kept.
    (Paired by index rather than a diff: difflib over thousands of alike lines took minutes.)"""
    lines = _escaped_lines(raw)
    old = [_json_string_content(line) for line in lines]
    new = marked.split("\n")
    if old == new:
        return raw
    at: dict[Optional[str], list[int]] = {}
    for k, line in enumerate(old):
        at.setdefault(line, []).append(k)
    rebuilt, next_old = [], 0
    for line in new:
        places = at.get(line, ())
        k = bisect.bisect_left(places, next_old)
        if k < len(places):
            rebuilt.append(lines[places[k]])
            next_old = places[k] + 1
        else:
            rebuilt.append(_escaped(line))
    return "\\n".join(rebuilt)


# A JSON string, from its opening quote: what `_redact_escaped_sessions` reads a session in.
_JSON_STRING = re.compile(r'"((?:[^"\\\r\n]|\\.)*)"')


class _OpeningQuotes:
    """Where the JSON string around a hit opens: the last unescaped `"` before it on its line (a
    JSON string holds no raw line break); -1 where none. Asked for hits in order, it reads the text
    once, forward (searched back from each hit, a long line of hits and no quote took seconds)."""

    def __init__(self, text: str) -> None:
        self.text, self.read_to, self.last = text, 0, -1

    def before(self, hit: int) -> int:
        text = self.text
        line_start = text.rfind("\n", self.read_to, hit) + 1
        if line_start:
            self.read_to, self.last = line_start, -1
        quote = text.find('"', self.read_to, hit)
        while quote >= 0:
            if not _escaped_at(text, quote):
                self.last = quote
            quote = text.find('"', quote + 1, hit)
        self.read_to = max(self.read_to, hit)
        return self.last


def _escaped_at(text: str, i: int) -> bool:
    """Whether the character at `i` follows an odd run of backslashes."""
    start = i
    while start > 0 and text[start - 1] == "\\":
        start -= 1
    return (i - start) % 2 == 1


def _redact_escaped_sessions(text: str, hits: "list[int]") -> tuple[str, int]:
    """A terminal session inside a JSON string that is no whole document (a transcript's line in
    grep's output, a hook payload echoed into a file, a fixture in code), which redact.py's JSON
    view never parses: each string a printer's prompt stands in is read as the text it stands for,
    redacted as a pasted session (an inner string escaped once more too), and the lines that
    changed are written back escaped (`_escaped_lines_replaced`)."""
    parts, copied, count = [], 0, 0
    quotes = _OpeningQuotes(text)
    tried: set[int] = set()  # (many hits in one string: it is read once)
    for hit in hits:
        if hit < copied:
            continue  # inside the string just rewritten
        quote = quotes.before(hit)
        if quote < copied or quote in tried:
            continue
        tried.add(quote)
        string = _JSON_STRING.match(text, quote)
        if string is None or string.end(1) <= hit:
            continue
        content = _json_string_content(string.group(1))
        if content is None:
            continue
        redacted, n = redact_pasted_sessions(content)
        if not n:
            continue
        parts += [text[copied : string.start(1)], _escaped_lines_replaced(string.group(1), redacted)]
        copied = string.end(1)
        count += n
    if not count:
        return text, 0
    return "".join(parts) + text[copied:], count


def mark_bash_mode_credentials(text: object, named: "set[str]") -> object:
    """A prompt's `!` turns with the password of each credential file they print gone, the files
    its session named (`auth-user-pass up.dat`) counted too; `redact_text` sees the usual names only."""
    if not named or not isinstance(text, str) or "<bash-stdout>" not in text:
        return text
    return _redact_bash_mode(text, named)[0]


def _credential_session_output(command: str, output: str, named: "set[str]" = frozenset()) -> Optional[str]:
    """What a pasted `cat creds.txt` printed, with its password gone; None when it prints no credential file."""
    password_file = credential_read("Bash", {"command": command}, named)
    if password_file is None:
        return None
    marked = mark_credential_lines(output, password_file)
    return marked if marked != output else None


def _redact_prompted_output(text: str, hits: "list[int]") -> tuple[str, int]:
    """Each prompt line whose command prints a secret keeps its command; its output goes. Only
    lines where one of `_PROMPTED_PRINTERS` hits (`hits`) are read as prompts (most texts have none)."""
    parts, copied, count = [], 0, 0
    for hit in hits:
        line_start = text.rfind("\n", 0, hit) + 1
        if line_start < copied:
            continue  # inside the output just replaced
        m = _PROMPT_LINE.match(text, line_start)
        if m is None or _already_marked(m.group("out")):
            continue
        if not command_prints_secret(m.group("cmd")):
            # `$ cat creds.txt`: a user, then its password
            marked = _credential_session_output(m.group("cmd"), m.group("out"))
            if marked is None:
                continue
            parts += [text[copied : m.start()], f"{m.group('prompt')}{m.group('cmd')}\n{marked}"]
            copied = m.end()
            count += 1
            continue
        ending = "\n" if m.group("out").endswith("\n") else ""
        parts += [text[copied : m.start()], f"{m.group('prompt')}{m.group('cmd')}\n{MARK}{ending}"]
        copied = m.end()
        count += 1
    if not count:
        return text, 0
    return "".join(parts) + text[copied:], count
