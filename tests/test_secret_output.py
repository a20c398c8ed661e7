"""Commands whose output is a secret: which they are, and their output gone wherever it is stored."""

from __future__ import annotations

import json

import pytest

from capture_daemon.redact import redact_text, redact_value
from capture_daemon.schema import ToolCall, Trace
from capture_daemon.scrub import scrub_payload, scrub_trace, scrub_turns
from capture_daemon.secret_output import MARK, command_prints_secret, redact_pasted_sessions
from capture_daemon.transcript import Block, PromptTurns, ToolResult

PASSWORD = "Qm7-horse-Battery-staple"  # no shape any rule over the text alone could know

PRINTS_SECRET = [
    "pass show email/gmail",
    "pass email/gmail",
    "gopass show -o db/prod",
    "op read op://dev/db/password",
    "op item get db --fields label=password",
    "security find-generic-password -s github -w",
    "secret-tool lookup service smtp",
    "vault kv get -field=password secret/db",
    "vault kv get secret/db",
    "gcloud secrets versions access latest --secret=db",
    "gcloud auth print-access-token",
    "aws secretsmanager get-secret-value --secret-id prod/db --query SecretString --output text",
    "aws ssm get-parameter --name /prod/db --with-decryption",
    "aws ecr get-login-password --region eu-west-1",
    "az keyvault secret show --vault-name v --name db --query value -o tsv",
    "az storage account keys list -n acct -o table",
    "az acr credential show -n registry",
    "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d",
    "kubectl create token deployer",
    "heroku config:get SECRET_KEY_BASE",
    "doppler secrets get DB_PASSWORD --plain",
    "gh auth token",
    "terraform output -raw db_password",
    "cd infra && terraform output -json",
    "sops -d secrets.enc.yaml",
    "gpg --decrypt notes.txt.gpg",
    "ansible-vault view group_vars/all/vault.yml",
    "openssl rand -base64 32",
    "wg genkey",
    "pwgen -s 24 1",
    'python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
    "printenv OPENAI_API_KEY",
    "echo $DB_PASSWORD",
    'echo "${GITHUB_TOKEN}"',
    "sudo -u deploy printenv API_TOKEN",
    "FOO=1 /usr/bin/pass show x",
    "docker-credential-desktop get",
    "ls && pass show x",
    "./bin/pass show deploy/db",
    "fly auth token",
    "firebase login:ci",
    "netlify env:get STRIPE_KEY",
    "railway variables",
    "doppler secrets",
    # A file that holds a secret and nothing else, printed.
    "cat /run/secrets/db_password",
    "sudo cat /var/run/secrets/kubernetes.io/serviceaccount/token",
    "cat config/master.key",
    "xxd config/credentials/production.key",
    "head -1 ~/.vault-token",
    "cat secrets/api_token.txt",
    "base64 < server.key",
    "cat .vault_pass | xclip",
    "Get-Content .\\db-password.txt",
    # PowerShell and cmd.exe: an environment variable or a property named like a secret.
    "$env:DB_PASSWORD",
    "echo $env:API_TOKEN",
    "Write-Output ${env:DB_PASSWORD}",
    '[Environment]::GetEnvironmentVariable("API_TOKEN")',
    "[System.Environment]::GetEnvironmentVariable('DB_PASSWORD', 'User')",
    "$cred.GetNetworkCredential().Password",
    "Get-Secret -Name db -AsPlainText",
    "echo %DB_PASSWORD%",
    "slappasswd -s x",
    "rclone obscure x",
    "terraform output db_password",
    # More password managers and secret stores, app secrets made on the spot, key-value reads
    # of secret-named keys, and any of these run elsewhere (docker exec, kubectl exec, ssh).
    "bw get password github",
    "bws secret get 0b6c",
    "lpass show --password github",
    "keepassxc-cli show -s db.kdbx github",
    "chamber read app db_password",
    "infisical secrets get DB_PASSWORD --plain",
    "akeyless get-secret-value -n /prod/db",
    "berglas access sm://proj/db",
    "bin/rails credentials:show",
    "bundle exec rake secret",
    "mix phx.gen.secret",
    "php artisan key:generate --show",
    "head -c 32 /dev/urandom | base64",
    "tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 24",
    "git config --get github.token",
    "consul kv get app/db/password",
    "etcdctl get /app/api_token --print-value-only",
    "docker exec -it -u postgres db printenv POSTGRES_PASSWORD",
    "docker compose exec db printenv POSTGRES_PASSWORD",
    "kubectl exec -it pod -n prod -- cat /run/secrets/db_password",
    "ssh -p 2222 bob@host 'pass show email'",
    "argocd admin initial-password -n argocd",
    "bin/elasticsearch-reset-password -u elastic",
    # Config reads of a registry's or a mail account's secret.
    "git config --global --get sendemail.smtppass",
    "git config get hub.oauthtoken",
    "npm config get //registry.npmjs.org/:_authToken",
    "yarn config get npmAuthToken",
    "pnpm config get //npm.pkg.github.com/:_authToken",
    "composer config --global github-oauth.github.com",
    "composer config http-basic.repo.example.com",
    "bundle config get gems.contribsys.com",
]

PRINTS_NO_SECRET = [
    "pass ls",
    "pass insert email/gmail",
    "pass git push",
    "pass show x | wc -c",
    "pass show x > /tmp/pw",
    "pass show x 2>/dev/null | sha256sum",
    "op item list",
    "vault status",
    "kubectl get secrets",
    "kubectl get pods -o jsonpath='{.items[*].metadata.name}'",
    "gh pr list",
    "terraform plan",
    "sops -e secrets.yaml",
    "gpg --encrypt -r bob notes.txt",
    "echo $HOME",
    "echo 'set API_KEY in .env'",
    "printenv",
    "printenv PATH",
    "git commit -m 'pass show'",
    "grep -rn 'pass show' docs/",
    "pytest -k pass",
    'python3 -c "print(1)"',
    "doppler secrets set API_KEY",
    "railway variables set X=1",
    "cat README.md",
    "cat src/auth/password.py",
    "cat tokenizer.json",
    "head -n 5 tokens.txt",
    "cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
    "cat public.key",
    "cat ~/.ssh/id_rsa.pub",
    "cat /etc/passwd",
    "cat .htpasswd",  # user:hash lines: the text rules redact the hashes and keep the users
    "tail -f logs/password_reset.log",
    "cat > db_password",
    "cat db_password > /tmp/copy",
    "cat db_password | wc -c",
    "$env:PATH",
    "echo $env:USERNAME",
    "[Environment]::GetEnvironmentVariable('PATH')",
    "$list.Count",
    "$cred.UserName",
    "Get-Secret -Name db",
    "echo %PATH%",
    "rclone ls remote:",
    "terraform output",
    "terraform output instance_ip",
    "",
    # (More stores, runners and remote commands that print nothing secret.)
    "bw list items",
    "bw sync",
    "lpass ls",
    "keepassxc-cli show db.kdbx github",
    "chamber list app",
    "rails server",
    "php artisan migrate",
    "bundle exec rails server",
    "docker exec db ls",
    "docker exec db psql -U postgres",
    "kubectl exec pod -- ls",
    "ssh host uptime",
    "ssh host",
    "git config --get user.email",
    "git config --global github.token x",
    "git config --get user.signingkey",
    "npm config get registry",
    "yarn config get npmRegistryServer",
    "composer config --global github-oauth.github.com x",
    "composer config repositories.foo vcs https://x",
    "bundle config get path",
    "consul kv get app/db/host",
    "head -c 32 /dev/urandom > key.bin",
]


@pytest.mark.parametrize("command", PRINTS_SECRET)
def test_commands_that_print_a_secret(command: str) -> None:
    assert command_prints_secret(command)


@pytest.mark.parametrize("command", PRINTS_NO_SECRET)
def test_commands_that_print_none(command: str) -> None:
    assert not command_prints_secret(command)


def test_unclosed_quotes_and_odd_input_do_not_raise() -> None:
    for command in ["pass show 'x", 'echo "$API_KEY', "|||", ";;", "&& pass show x", None, 3]:
        command_prints_secret(command)  # type: ignore[arg-type]
    assert command_prints_secret("pass show 'db") is True


def test_hook_payload_loses_stdout_keeps_stderr_and_status() -> None:
    payload = {
        "hook_event_name": "PostToolUse",
        "session_id": "s1",
        "tool_name": "Bash",
        "tool_input": {"command": "pass show deploy/db", "description": "Read it"},
        "tool_response": {"stdout": PASSWORD + "\n", "stderr": "gpg: decrypted with 1 key", "interrupted": False},
    }
    out = scrub_payload(payload)
    assert out["tool_response"] == {"stdout": MARK, "stderr": "gpg: decrypted with 1 key", "interrupted": False}
    assert out["tool_input"]["command"] == "pass show deploy/db"
    assert payload["tool_response"]["stdout"] == PASSWORD + "\n"  # the caller's dict is not changed


def test_hook_payload_of_an_ordinary_command_is_kept() -> None:
    payload = {"tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_response": {"stdout": PASSWORD, "stderr": ""}}
    assert scrub_payload(payload)["tool_response"]["stdout"] == PASSWORD


def test_transcript_result_of_a_secret_printer_is_replaced() -> None:
    turns = PromptTurns(prompt_id="p1", prompt="what is the db password")
    turns.blocks = [
        Block(kind="tool_use", message_id="m1", tool_use_id="t1", name="Bash", input={"command": "op read op://dev/db/password"}),
        Block(kind="tool_use", message_id="m1", tool_use_id="t2", name="Bash", input={"command": "cat notes.txt"}),
    ]
    turns.results = {"t1": ToolResult(text=PASSWORD, is_error=False), "t2": ToolResult(text="notes", is_error=False)}
    scrub_turns(turns)
    assert turns.results["t1"].text == MARK and turns.results["t2"].text == "notes"


def test_imported_trace_loses_the_output_too() -> None:
    trace = Trace(
        trace_id="t",
        session_id="s",
        prompt_id="p",
        prompt="token please",
        tool_calls=[ToolCall(tool_use_id="t1", name="Bash", input={"command": "gh auth token"}, output=PASSWORD)],
    )
    assert scrub_trace(trace).tool_calls[0].output == MARK


def test_pasted_terminal_sessions() -> None:
    text = f"$ pass show db\n{PASSWORD}\n$ ls\nREADME.md\n"
    assert redact_text(text) == f"$ pass show db\n{MARK}\n$ ls\nREADME.md\n"
    out, n = redact_pasted_sessions(f"<bash-input>gh auth token</bash-input><bash-stdout>{PASSWORD}</bash-stdout>")
    assert n == 1 and PASSWORD not in out and "<bash-input>gh auth token</bash-input>" in out
    # Inside a JSON document (a hook payload's prompt), too.
    assert PASSWORD not in str(redact_value({"prompt": f"look:\nuser@box:~$ printenv DB_PASSWORD\n{PASSWORD}\n"}))


def test_a_pasted_session_escaped_in_a_json_string_is_redacted_the_same() -> None:
    """A pasted terminal session inside a JSON string that is no whole document (a transcript's
    line in grep's output, a hook payload echoed into a file, a fixture in code): its lines end in
    `\\n` escapes, its quotes are `\\"`, and what the printer printed goes as in the unescaped session."""

    def escaped(text: str) -> str:
        return json.dumps(text)[1:-1]

    for session in (
        f"$ pass show db/prod\n{PASSWORD}\n$ ls",
        f"look:\ndev@box:~/app$ printenv STRIPE_SECRET\n{PASSWORD}\nsecond line\n\nThen it ran.",  # two lines, one marker
        f"$ gh auth token\r\n{PASSWORD}\r\n$ ls\r\nREADME.md\r\n",
        f"$ cat creds.txt\nalice\n{PASSWORD}\n$ ls\n",
        f"PS C:\\Users\\me> Get-Content .\\secrets\\db-password.txt\n{PASSWORD}\n",  # backslashes escaped too
        f'$ echo "$DB_PASSWORD"\n{PASSWORD}\n',
    ):
        unescaped = redact_text(session)
        assert PASSWORD not in unescaped, session  # as today
        for text in (
            'sessions/s1.jsonl:{"type": "user", "message": {"content": "' + escaped(session) + '"}}',  # grep's hit: no whole document
            "echo '{\"prompt\": \"" + escaped(session) + "\"}' > payload.json",
            'FIXTURE = "' + escaped(session) + '"',
            '{"a": 1, "content": "' + escaped(session) + '"} trailing',
        ):
            assert redact_text(text) == text.replace(escaped(session), escaped(unescaped)), text
    # The other lines keep their own escapes, byte for byte: only the output's lines are written anew.
    kept = "$ cat creds.txt\\nren\\u00e9\\n" + PASSWORD + "\\n$ curl https:\\/\\/x.example\\n\\u00e9t\\u00e9"
    assert redact_text(f'x = "{kept}"') == f'x = "{kept}"'.replace(PASSWORD, MARK)
    printer = "$ pass show x\\n" + PASSWORD + "\\nmore\\n\\nnot printed: caf\\u00e9\\n$ ls"
    assert redact_text(f'x = "{printer}"') == f'x = "$ pass show x\\n{MARK}\\n\\nnot printed: caf\\u00e9\\n$ ls"'
    # Escaped twice (a hook payload's JSON text inside a transcript's line): the inner string's session too.
    inner = json.dumps({"stdout": f"$ pass show x\n{PASSWORD}\n"})
    assert PASSWORD not in redact_text("s.jsonl:" + json.dumps({"tool_response": inner})[:-1])


def test_escaped_pasted_session_lookalikes_are_kept() -> None:
    """Sessions that print no secret, prompts that start no line, and strings that are no JSON string's content stay."""
    for text in (
        'FIXTURE = "$ pass ls\\nPassword Store\\n$ echo $HOME\\n/home/dev\\n$ pass show x | wc -c\\n13"',
        'print("usage: $ pass show NAME\\nprints the entry")',  # a prompt mid-line
        'printf("$ pass show %s\\n", name);',  # no output line
        'PATTERN = "$ pass show x\\\\nPW1x9q"',  # an escaped backslash before `n`: one line
        'path = "C:\\new\\Zq8v"\n$ ls',  # no JSON string's content (`\\Z`)
        's.jsonl:{"content": "$ cat notes.txt\\nalice\\nZq8vLm2pXw\\n"}',
    ):
        assert redact_text(text) == text, text


def test_secret_named_values_in_structured_output() -> None:
    # `aws secretsmanager get-secret-value` and `az storage account keys list` as JSON.
    out = redact_value({"Name": "prod/db", "SecretString": PASSWORD, "VersionStages": ["AWSCURRENT"]})
    assert out["SecretString"] == "[REDACTED:assignment]" and out["VersionStages"] == ["AWSCURRENT"]
    key = "Q29udG9zbzEyMw" + "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4" + "=="
    keys = redact_value([{"keyName": "key1", "permissions": "FULL", "value": key}])
    assert keys == [{"keyName": "key1", "permissions": "FULL", "value": "[REDACTED:azure-key]"}]
    assert PASSWORD not in redact_text('[{"keyName": "key1", "value": "' + PASSWORD + '"}]')


def test_a_read_of_a_secret_file_loses_its_content_keeps_the_rest() -> None:
    """Claude Code's Read tool: `config/master.key` is 32 hex characters, no name, no known shape."""
    key = "9f2c4e1b7a3d5f60c8e2b4a6d1f3e5c7"
    payload = {
        "hook_event_name": "PostToolUse",
        "tool_name": "Read",
        "tool_input": {"file_path": "/app/config/master.key"},
        "tool_response": {"type": "text", "file": {"filePath": "/app/config/master.key", "content": key + "\n",
                                                   "numLines": 2, "startLine": 1, "totalLines": 2}},
    }
    out = scrub_payload(payload)
    assert out["tool_response"]["file"] == {"filePath": "/app/config/master.key", "content": MARK,
                                            "numLines": 2, "startLine": 1, "totalLines": 2}
    assert key not in str(out)
    ordinary = {**payload, "tool_input": {"file_path": "/app/README.md"}}
    assert scrub_payload(ordinary)["tool_response"]["file"]["content"] == key + "\n"

    turns = PromptTurns(prompt_id="p1", prompt="why does rails not boot")
    turns.blocks = [Block(kind="tool_use", message_id="m1", tool_use_id="t1", name="Read",
                          input={"file_path": "/run/secrets/db_password"})]
    turns.results = {"t1": ToolResult(text="     1\t" + PASSWORD, is_error=False)}
    scrub_turns(turns)
    assert turns.results["t1"].text == MARK


def test_which_files_hold_a_secret_by_name_or_place() -> None:
    from capture_daemon.secret_output import file_holds_secret

    for path in ["/run/secrets/anything", "C:\\app\\config\\master.key", ".vault-token", "deploy/db-password",
                 "api_token.txt", "ansible/.vault_pass"]:
        assert file_holds_secret(path), path
    for path in ["password.py", "token_test.go", "docs/secrets.md", "src/keys.ts", "id_ed25519.pub", "", None,
                 "/run/secrets/ca.crt", "tests/"]:
        assert not file_holds_secret(path), path


def test_a_read_of_a_credential_file_loses_its_password_keeps_its_user() -> None:
    """OpenVPN's `auth-user-pass creds.txt` file: a user, then its password; nothing in the text
    says secret, the file's name does."""
    content = f"alice\n{PASSWORD}\n"
    payload = {"tool_name": "Read", "tool_input": {"file_path": "/etc/openvpn/creds.txt"},
               "tool_response": {"type": "text", "file": {"filePath": "/etc/openvpn/creds.txt", "content": content, "numLines": 3}}}
    assert scrub_payload(payload)["tool_response"]["file"] == {"filePath": "/etc/openvpn/creds.txt", "content": f"alice\n{MARK}\n", "numLines": 3}
    for command in ("cat vpn-auth.txt", "sudo cat /etc/openvpn/client.creds", "head -n 2 ~/vpn/login.txt"):
        bash = {"tool_name": "Bash", "tool_input": {"command": command}, "tool_response": {"stdout": content, "stderr": ""}}
        assert scrub_payload(bash)["tool_response"] == {"stdout": f"alice\n{MARK}\n", "stderr": ""}, command
    one = {"tool_name": "Read", "tool_input": {"file_path": "/root/openvpn.pass"}, "tool_response": PASSWORD}
    assert scrub_payload(one)["tool_response"] == MARK  # a `.pass` file's one word

    turns = PromptTurns(prompt_id="p1", prompt="the vpn will not connect")
    turns.blocks = [Block(kind="tool_use", message_id="m1", tool_use_id="t1", name="Read", input={"file_path": "/etc/openvpn/client-creds.txt"})]
    turns.results = {"t1": ToolResult(text=f"     1\talice\n     2\t{PASSWORD}\n", is_error=False)}
    scrub_turns(turns)
    assert turns.results["t1"].text == f"     1\talice\n     2\t{MARK}\n"
    trace = Trace(trace_id="t", session_id="s", prompt_id="p", prompt="vpn",
                  tool_calls=[ToolCall(tool_use_id="t1", name="Bash", input={"command": "cat creds.txt"}, output=f"alice\n{PASSWORD}")])
    assert scrub_trace(trace).tool_calls[0].output == f"alice\n{MARK}"
    assert redact_text(f"$ cat creds.txt\nalice\n{PASSWORD}\n$ ls\n") == f"$ cat creds.txt\nalice\n{MARK}\n$ ls\n"


def test_a_file_a_config_names_for_a_login_loses_its_password() -> None:
    """`auth-user-pass /etc/openvpn/up.dat` in a config read earlier names the file whatever its
    name; so do `--password-file`, `passwordfile=`, `PGPASSFILE=` and `--password-stdin < f`."""
    config = {"session_id": "s-vpn", "tool_name": "Read", "tool_input": {"file_path": "/etc/openvpn/client.ovpn"},
              "tool_response": {"type": "text", "file": {"filePath": "/etc/openvpn/client.ovpn", "content": "client\nauth-user-pass /etc/openvpn/up.dat\n"}}}
    scrub_payload(config)
    read = {"session_id": "s-vpn", "tool_name": "Bash", "tool_input": {"command": "sudo cat /etc/openvpn/up.dat"},
            "tool_response": {"stdout": f"alice\n{PASSWORD}\n", "stderr": ""}}
    assert scrub_payload(read)["tool_response"]["stdout"] == f"alice\n{MARK}\n"
    assert scrub_payload({**read, "session_id": "another"})["tool_response"]["stdout"] == f"alice\n{PASSWORD}\n"

    turns = PromptTurns(prompt_id="p1", prompt="sync fails")
    turns.blocks = [
        Block(kind="tool_use", message_id="m1", tool_use_id="t1", name="Bash", input={"command": "rsync --password-file=/etc/rsync.sec a::b ."}),
        Block(kind="tool_use", message_id="m1", tool_use_id="t2", name="Read", input={"file_path": "/etc/rsync.sec"}),
    ]
    turns.results = {"t1": ToolResult(text="@ERROR: auth failed", is_error=True), "t2": ToolResult(text=f"     1\t{PASSWORD}\n", is_error=False)}
    scrub_turns(turns)
    assert turns.results["t2"].text == f"     1\t{MARK}\n"

    from capture_daemon.secret_output import named_credential_files

    assert named_credential_files([
        "auth-user-pass /etc/openvpn/login.conf", "--auth-user-pass 'vpn creds'", "passwordfile = /opt/app/pw.dat",
        "PGPASSFILE=/app/.pg_login psql", "docker login -u me --password-stdin < ~/tok.dat", "http-proxy-user-pass proxy.dat",
    ]) == {"login.conf", "vpn creds", "pw.dat", ".pg_login", "tok.dat", "proxy.dat"}


def test_a_bash_mode_read_of_a_credential_file_loses_its_password_keeps_its_user() -> None:
    """`!cat creds.txt` in Claude Code's `!` mode: the prompt's `<bash-stdout>` is the file, as a
    Bash tool call's result is; a file a config named (`auth-user-pass up.dat`) counts too."""
    turn = f"<bash-input>cat creds.txt</bash-input><bash-stdout>alice\n{PASSWORD}\n</bash-stdout><bash-stderr></bash-stderr>"
    assert redact_text(turn) == f"<bash-input>cat creds.txt</bash-input><bash-stdout>alice\n{MARK}\n</bash-stdout><bash-stderr></bash-stderr>"
    out, n = redact_pasted_sessions(f"<bash-input>sudo head -n 2 /etc/openvpn/vpn-auth.txt</bash-input>\n<bash-stdout>alice\n{PASSWORD}</bash-stdout>")
    assert n == 1 and out == f"<bash-input>sudo head -n 2 /etc/openvpn/vpn-auth.txt</bash-input>\n<bash-stdout>alice\n{MARK}</bash-stdout>"
    assert redact_text(f"<bash-input>cat /root/openvpn.pass</bash-input><bash-stdout>{PASSWORD}</bash-stdout>") == (
        f"<bash-input>cat /root/openvpn.pass</bash-input><bash-stdout>{MARK}</bash-stdout>")  # a `.pass` file's one word
    # A file named in the same text, by a config printed before it.
    named = (f"<bash-input>cat client.ovpn</bash-input><bash-stdout>client\nauth-user-pass /etc/openvpn/up.dat\n</bash-stdout>\n"
             f"<bash-input>cat /etc/openvpn/up.dat</bash-input><bash-stdout>alice\n{PASSWORD}\n</bash-stdout>")
    assert redact_text(named) == named.replace(PASSWORD, MARK)

    # A file the session named earlier: in a transcript's prompt, a finished trace's, a hook payload's.
    turns = PromptTurns(prompt_id="p1", prompt=f"<bash-input>cat /etc/openvpn/up.dat</bash-input><bash-stdout>alice\n{PASSWORD}\n</bash-stdout>")
    turns.blocks = [Block(kind="tool_use", message_id="m1", tool_use_id="t1", name="Read", input={"file_path": "/etc/openvpn/client.ovpn"})]
    turns.results = {"t1": ToolResult(text="client\nauth-user-pass /etc/openvpn/up.dat\n", is_error=False)}
    scrub_turns(turns)
    assert turns.prompt == f"<bash-input>cat /etc/openvpn/up.dat</bash-input><bash-stdout>alice\n{MARK}\n</bash-stdout>"
    trace = Trace(trace_id="t", session_id="s", prompt_id="p", prompt=f"<bash-input>sudo cat up.dat</bash-input><bash-stdout>alice\n{PASSWORD}</bash-stdout>",
                  tool_calls=[ToolCall(tool_use_id="t1", name="Read", input={"file_path": "/etc/openvpn/client.ovpn"}, output="auth-user-pass up.dat")])
    assert scrub_trace(trace).prompt == f"<bash-input>sudo cat up.dat</bash-input><bash-stdout>alice\n{MARK}</bash-stdout>"
    config = {"session_id": "s-bash-mode", "tool_name": "Read", "tool_input": {"file_path": "/etc/openvpn/client.ovpn"},
              "tool_response": "client\nauth-user-pass /etc/openvpn/up.dat\n"}
    scrub_payload(config)
    prompt = {"session_id": "s-bash-mode", "hook_event_name": "UserPromptSubmit",
              "prompt": f"<bash-input>cat /etc/openvpn/up.dat</bash-input><bash-stdout>alice\n{PASSWORD}</bash-stdout> why does it fail"}
    assert scrub_payload(prompt)["prompt"] == f"<bash-input>cat /etc/openvpn/up.dat</bash-input><bash-stdout>alice\n{MARK}</bash-stdout> why does it fail"
    assert scrub_payload({**prompt, "session_id": "another"})["prompt"] == prompt["prompt"]


def test_a_bash_mode_turn_escaped_in_a_json_string_is_redacted_the_same() -> None:
    """A `!` turn inside a JSON string that is no whole document (a transcript's line in grep's
    output, a hook payload echoed in a command, a fixture in code): its line breaks are `\\n`
    escapes and its quotes `\\"`, and its output goes as the unescaped turn's does."""

    def escaped(turn: str) -> str:
        return json.dumps(turn)[1:-1]

    printer = f"<bash-input>gh auth token</bash-input>\n<bash-stdout>{PASSWORD}\n</bash-stdout>"
    credential = f"<bash-input>cat creds.txt</bash-input><bash-stdout>alice\n{PASSWORD}\n</bash-stdout><bash-stderr></bash-stderr>"
    crlf = f"<bash-input>sudo head -n 2 /etc/openvpn/vpn-auth.txt</bash-input>\r\n<bash-stdout>alice\r\n{PASSWORD}\r\n</bash-stdout>"
    quoted = f"<bash-input>cat \"/root/openvpn.pass\"</bash-input>\n<bash-stdout>{PASSWORD}</bash-stdout>"
    for turn in (printer, credential, crlf, quoted):
        unescaped = redact_text(turn)
        assert PASSWORD not in unescaped, turn  # as today
        for text in (
            'sessions/s1.jsonl:{"type": "user", "message": {"content": "' + escaped(turn) + ' why?"}',  # grep's hit: no whole document
            "echo '{\"prompt\": \"" + escaped(turn) + "\"}' > payload.json",
            'FIXTURE = "' + escaped(turn) + '"',
        ):
            # The same replacement, escaped; the rest as it was.
            assert redact_text(text) == text.replace(escaped(turn), escaped(unescaped)), text
    # A file the session named, in scrub's pass over a prompt (a hook payload's `prompt`).
    from capture_daemon.secret_output import mark_bash_mode_credentials

    up = escaped(f"<bash-input>cat /etc/openvpn/up.dat</bash-input>\n<bash-stdout>alice\n{PASSWORD}\n</bash-stdout>")
    assert mark_bash_mode_credentials(up, {"up.dat"}) == up.replace(PASSWORD, MARK)
    # The other lines keep their own escapes (the user's `\u00e9`, not `é`): only the password's line is written anew.
    accented = f"<bash-input>cat creds.txt</bash-input><bash-stdout>ren\\u00e9\\n{PASSWORD}\\n</bash-stdout>"
    assert redact_text(accented) == accented.replace(PASSWORD, MARK)
    # A line broken by a `\u000a` escape as well: the whole output is written anew, the password gone.
    unicode_break = f"<bash-input>cat creds.txt</bash-input><bash-stdout>alice\\u000a{PASSWORD}\\n</bash-stdout>"
    assert PASSWORD not in redact_text(unicode_break)


def test_a_bash_mode_turn_with_unicode_escaped_tags_is_redacted_the_same() -> None:
    """Go's encoding/json (and other writers that escape HTML) write the tags' `<` and `>` as
    `\\u003c` and `\\u003e`: such a turn loses its output as the unescaped one does, its tags kept as written."""

    def go_escaped(text: str) -> str:
        return json.dumps(text)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e")

    printer = f"<bash-input>gh auth token</bash-input>\n<bash-stdout>{PASSWORD}\n</bash-stdout>"
    credential = f"<bash-input>cat creds.txt</bash-input><bash-stdout>alice\n{PASSWORD}\n</bash-stdout><bash-stderr></bash-stderr>"
    quoted = f"<bash-input>cat \"/root/openvpn.pass\"</bash-input>\r\n<bash-stdout>{PASSWORD}</bash-stdout>"
    for turn in (printer, credential, quoted):
        unescaped = redact_text(turn)
        assert PASSWORD not in unescaped, turn  # as today
        for text in (
            'sessions/s1.jsonl:{"type": "user", "message": {"content": "' + go_escaped(turn) + ' why?"}',
            'FIXTURE = "' + go_escaped(turn) + '"',
            go_escaped(turn),
        ):
            assert redact_text(text) == text.replace(go_escaped(turn), go_escaped(unescaped)), text
    upper = go_escaped(printer).replace("\\u003c", "\\u003C").replace("\\u003e", "\\u003E")
    assert redact_text(upper) == upper.replace(PASSWORD, MARK).replace(MARK + "\\n", MARK)


def test_escaped_bash_mode_lookalikes_are_kept() -> None:
    """Escaped turns of other files, and unescaped turns whose output holds a backslash, stay."""
    for turn in (
        f"<bash-input>cat notes.txt</bash-input>\n<bash-stdout>alice\n{PASSWORD}\n</bash-stdout>",
        f"<bash-input>cat creds.txt | wc -l</bash-input>\n<bash-stdout>alice\n{PASSWORD}\n</bash-stdout>",
        "<bash-input>cat creds.txt</bash-input>\n<bash-stdout>[default]\naws_region = eu-west-1\nprofile = dev\n</bash-stdout>",
        "<bash-input>ls</bash-input>\n<bash-stdout>a.txt\nb.txt\n</bash-stdout>",
    ):
        text = 'FIXTURE = "' + json.dumps(turn)[1:-1] + '"'
        assert redact_text(text) == text, turn
        tags_escaped = text.replace("<", "\\u003c").replace(">", "\\u003e")
        assert redact_text(tags_escaped) == tags_escaped, turn
    # Unescaped, a backslash in the output is the output's: `C:\new` is no line break.
    windows = "<bash-input>type creds.txt</bash-input><bash-stdout>C:\\new\\Zq8v</bash-stdout>"
    assert redact_text(windows) == windows
    three = f"<bash-input>cat creds.txt</bash-input><bash-stdout>alice\nline with \\n inside\n{PASSWORD}\n</bash-stdout>"
    assert redact_text(three) == three


def test_bash_mode_reads_of_other_files_are_kept() -> None:
    two = f"alice\n{PASSWORD}\n"
    for command in ("cat notes.txt", "cat creds.txt | wc -l", "cat creds.txt > /tmp/x", "cat up.dat", "cat /etc/passwd"):
        turn = f"<bash-input>{command}</bash-input><bash-stdout>{two}</bash-stdout>"
        assert redact_text(turn) == turn, command
    for content in ("[default]\naws_access_key_id = AKIA\n", "a b\nc\n", "one\ntwo\nthree\n", "alice\n"):
        turn = f"<bash-input>cat ~/.aws/credentials</bash-input><bash-stdout>{content}</bash-stdout>"
        assert redact_text(turn) == turn, content


def test_credential_file_lookalikes_are_kept() -> None:
    from capture_daemon.secret_output import credential_file

    for path in ["creds.txt", "/etc/openvpn/vpn-auth.txt", "openvpn.pass", "credentials", "auth.txt", "x.creds", "login.txt"]:
        assert credential_file(path), path
    for path in ["auth.py", "login.html", "password_reset.ts", "README.md", "/etc/passwd", "notes.txt", "authors.txt", "", None]:
        assert not credential_file(path), path
    for content in ("[default]\naws_access_key_id = AKIA\n", "a b\nc\n", "one\ntwo\nthree\n", "alice\n"):
        payload = {"tool_name": "Read", "tool_input": {"file_path": "/home/me/.aws/credentials"}, "tool_response": content}
        assert scrub_payload(payload)["tool_response"] == content, content
    two = f"alice\n{PASSWORD}\n"
    for command in ("cat notes.txt", "cat creds.txt | wc -l", "cat creds.txt > /tmp/x"):
        bash = {"tool_name": "Bash", "tool_input": {"command": command}, "tool_response": {"stdout": two}}
        assert scrub_payload(bash)["tool_response"] == {"stdout": two}, command


def test_pasted_sessions_that_print_a_secret_file() -> None:
    text = f"$ cat /run/secrets/db_password\n{PASSWORD}\n\nThen the app starts."
    assert redact_text(text) == f"$ cat /run/secrets/db_password\n{MARK}\n\nThen the app starts."
    assert PASSWORD not in redact_text(f"<bash-input>cat config/master.key</bash-input><bash-stdout>{PASSWORD}</bash-stdout>")


@pytest.mark.parametrize(
    "prompt",
    ["PS C:\\Users\\me> ", "PS C:\\> ", "PS /home/me> ", "PS> ", "C:\\Users\\me>", "C:\\Users\\me> "],
)
def test_pasted_powershell_and_cmd_sessions(prompt: str) -> None:
    for command in ("Get-Content .\\secrets\\db-password.txt", "type secrets\\db_password.txt", "$env:DB_PASSWORD", "echo %API_TOKEN%"):
        text = f"{prompt}{command}\n{PASSWORD}\n{prompt}dir\n"
        assert redact_text(text) == f"{prompt}{command}\n{MARK}\n{prompt}dir\n", (prompt, command)
    kept = f"{prompt}Get-Content .\\README.md\n# Title\n{prompt}$env:PATH\nC:\\Windows\n{prompt}$x.Count\n3\n"
    assert redact_text(kept) == kept


def test_powershell_env_listing_loses_secret_values() -> None:
    text = (
        "PS C:\\> Get-ChildItem env:\n\nName                           Value\n----                           -----\n"
        f"API_TOKEN                      {PASSWORD}\nPATH                           C:\\Windows\n"
    )
    out = redact_text(text)
    assert PASSWORD not in out and "PATH                           C:\\Windows" in out and "API_TOKEN " in out
