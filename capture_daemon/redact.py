"""Remove secrets from trace text before it reaches the store or an export.

The daemon runs `redact_value` over every trace (prompt, tool inputs, tool outputs, narration,
thinking, final answer), so a key pasted into a prompt or printed by `env` or `cat .env` never
lands in SQLite, in `capture-daemon export`, or in a training set.

What is detected (the marker's kind in brackets):

- private key blocks, PEM/OpenSSH/PGP, with real newlines or JSON-escaped ``\\n``
  (``-----BEGIN RSA PRIVATE KEY-----`` ... ``-----END RSA PRIVATE KEY-----``); the BEGIN/END
  lines stay, the key material goes [private-key]; also OpenVPN's ``Static key V1``, PuTTY ``.ppk`` files (the lines after
  ``Private-Lines:``) and base64-encoded PEM private keys (kubeconfig ``client-key-data``, a
  Kubernetes TLS secret's ``tls.key``) [private-key]; age ``AGE-SECRET-KEY-1`` [age-secret-key]
- AI providers: Anthropic ``sk-ant-`` [anthropic-key], OpenAI ``sk-proj-``/``sk-svcacct-``/
  ``sk-admin-`` and ``sk-`` + 20 or more letters and digits [openai-key] (``sk-`` followed by
  dashed words is CSS: ``sk-circle-2x-animation-delay`` stays), OpenRouter ``sk-or-v1-``
  [openrouter-key], Hugging Face ``hf_`` [huggingface-token], Groq ``gsk_``, xAI ``xai-``,
  Perplexity ``pplx-``, Replicate ``r8_``, LangSmith ``lsv2_``, ElevenLabs ``sk_`` + 48 hex
- provider keys by their prefix: Google ``AIza`` [google-api-key], Google OAuth ``ya29.``/``GOCSPX-``/``1//0``
  [google-oauth], Stripe ``sk_live_``/``rk_live_``/``whsec_`` [stripe-key], SendGrid ``SG.x.y``
  [sendgrid-key], Twilio ``SK`` + 32 hex [twilio-key], npm ``npm_`` [npm-token], PyPI
  ``pypi-Ag...`` [pypi-token], RubyGems ``rubygems_``, Docker Hub ``dckr_pat_``, DigitalOcean
  ``dop_v1_`` [digitalocean-token], Shopify ``shpat_`` [shopify-token], Square ``sq0atp-``/
  ``sq0csp-``/``EAAA`` [square-token], Facebook ``EAA`` [facebook-token], Mailchimp
  ``<32 hex>-us<n>`` [mailchimp-key], Mailgun ``key-`` [mailgun-key], Brevo ``xkeysib-``, Heroku
  ``HRKU-`` [heroku-key], Vault ``hvs.``/``hvb.``/``hvr.`` [vault-token], Doppler ``dp.st.`` etc.
  [doppler-token], Linear ``lin_api_``, Postman ``PMAK-``, Atlassian ``ATATT3``, Databricks
  ``dapi``, Sentry ``sntrys_``/``sntryu_``, Grafana ``glsa_``/``glc_``, New Relic ``NRAK-``,
  Pulumi ``pul-``, Supabase ``sbp_``, Notion ``ntn_``/``secret_``, Airtable ``pat<14>.<64 hex>``,
  Dynatrace ``dt0c01.``, Terraform Cloud ``.atlasv1.``, Contentful ``CFPAT-``, Dropbox ``sl.``,
  Alibaba ``LTAI``, Tencent ``AKID``, Firebase Cloud Messaging ``:APA91b``, Mapbox ``sk.eyJ``,
  OpenShift ``sha256~``, Tailscale ``tskey-``, Plaid ``access-production-``, Braintree
  ``access_token$production$``, Render ``rnd_``, Netlify ``nfp_``, Fly.io ``fm2_``/``fo1_``,
  Buildkite ``bkua_``, CircleCI ``CCIPAT_``, Shippo ``shippo_live_``, 1Password ``ops_eyJ``, PlanetScale
  ``pscale_pw_``/``pscale_tkn_``, Supabase ``sb_secret_``, Resend ``re_``, Neon ``napi_``, PostHog ``phx_``,
  SonarQube ``squ_``/``sqp_``/``sqa_``, Prefect ``pnu_``, Honeycomb ``hcaik_``, Fireworks ``fw_``, JFrog
  ``AKCp``, Bitbucket ``ATBB``, Langfuse ``sk-lf-``
  (each marked with its provider's name, e.g. [groq-key], [vault-token])
- cloud credentials: AWS ``AKIA``/``ASIA`` key ids [aws-access-key-id], and the secret access key
  after its id on a line (``AKIA...,wJalr...``) or in the console's credentials CSV (every column
  under ``Password`` or ``Secret access key``) [aws-secret-key], or under its name
  (``aws_secret_access_key = ...``) [assignment]; Azure ``AccountKey=``/``SharedAccessKey=``
  [azure-key], SAS ``sig=`` [azure-sas] and AD client secrets ``xxx8Q~...``
  [azure-ad-client-secret]; GCP service-account JSON through its ``private_key`` block; Composer's
  auth.json tokens per host (``{"github-oauth": {"github.com": T}}``, parsed, or as text: in
  ``COMPOSER_AUTH='{...}'`` too; ``gitlab-token``, ``bearer``) [assignment]; a JSON object in a
  quoted value is judged name by name, whatever name it is under (``X_AUTH='{"password": "PW"}'``)
- GitHub ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_`` [github-token], GitLab ``glpat- gldt- glrt-
  glptt- glsoat- glcbt- glimt- GR1348941`` [gitlab-token], Slack ``xoxb- xoxp- xoxc- xoxd- xapp-``
  [slack-token] and ``hooks.slack.com`` webhook paths [slack-webhook], Discord webhook paths
  [discord-webhook] and bot tokens [discord-bot-token], Microsoft Teams webhooks
  [teams-webhook], Telegram bot tokens ``123456789:AA...`` [telegram-bot-token]
- JWTs ``eyJ...eyJ...sig`` [jwt]; a base64 docker config (``.dockerconfigjson: eyJhdXRocyI6...``)
  [docker-auth]; ``aws ecr get-login-password``'s ``eyJwYXlsb2FkIjoi...`` [aws-ecr-token]
- ``Authorization: Bearer|Basic|Token <value>`` headers, also as a dict key or a
  ``headers["Authorization"] = ...`` subscript, and under any other scheme or none when the value
  looks machine-made (``SSWS``, ``Splunk``, ``Bot``, ``GenieKey``, ``SharedKey``) [authorization], a bare ``Bearer <token>``
  [bearer-token], a bare ``Basic <base64 user:password>`` [authorization]; requests'
  ``auth=("user", "pw")`` and ``BasicAuth("user", "pw")``, ``basic_auth=``/``http_auth=("user", "pw")``, ``.basicAuth("user", "pw")``,
  ``.credentials("user", "pw")``, ``.auth("user", "pw")``, reqwest's ``.basic_auth("user", Some("pw"))``
  [auth-pair]; a ``user:pw`` literal encoded for a Basic header (``btoa('u:pw')``,
  ``b64encode(b"u:pw")``, ``Buffer.from('u:pw')``, PHP's
  ``CURLOPT_USERPWD, "u:pw"``) [authorization]
- passwords in URLs: ``scheme://user:PASSWORD@host`` keeps user and host [url-password], and in
  Go's MySQL DSNs, ``user:PASSWORD@tcp(host:3306)/db`` (``@unix(...)``) [url-password]; a random
  token as a URL's whole user part (``https://<40 hex>@github.com/org/repo.git``, a Sentry DSN's key), and
  the user of GitHub's ``https://TOKEN:x-oauth-basic@github.com`` [url-password]
- cookies: the values of ``Cookie:`` and ``Set-Cookie:`` headers (curl -v output, HTTP dumps,
  ``-H "Cookie: ..."``, a ``{"Cookie": ...}`` dict, a HAR ``{"name": "Cookie", "value": ...}``
  header), quoted ones (``sid="v"``) too, of ``curl -b|--cookie 'a=1; b=2'``, and every value of a
  HAR ``cookies`` list (as JSON), and of a cookie mapping in code (``cookies={"sid": "v"}``,
  ``cookies=dict(sid="v")``, ``cookies: {sid: "v"}``); cookie names and Set-Cookie's attributes (``Path``,
  ``Expires``, ``SameSite``...) stay [cookie]
- assignments whose name says secret: ``.env``/shell/YAML/JSON/code, ``NAME=v``, ``name: v``,
  ``"name": "v"``, ``name := v``, ``'name' => v``, ``NAME = v`` anywhere on a line (Make's ``NAME ?= v``,
  Ruby's ``||=``, JavaScript's ``??=`` too), a type
  annotation between (``const apiKey: string = "v"``, ``val password: String = "v"``,
  ``api_key: str = "v"``), Ruby symbols (``:password => 'v'``, ``:rubygems_api_key: v``), SQL's
  ``PASSWORD = N'v'``, MongoDB's ``pwd: "v"`` (not a path), PowerShell
  ``$env:NAME = v``, ``os.environ['NAME'] = v``, ``("NAME", "v")`` pairs such as PHP's
  ``define('DB_PASSWORD', 'v')`` (a dotted property's name too, ``System.setProperty("a.b.password",
  "v")``, configparser's ``.set('db', 'password', 'v')``, ``setenv("PW", "v", 1)``), a literal
  in a wrapper (``String::from("v")``, ``SecretStr("v")``, ``Some("v".into())``, ``new String("v")``),
  a type or form between (Go's ``var password string = "v"``, VB's ``Dim k As String = "v"``, C's
  ``char password[] = "v"``, ``#define WIFI_PASSWORD "v"``, a DSL's ``storePassword "v"`` on a line of its
  own: Gradle, Chef), Capistrano's ``set :api_token, "v"``, Android's ``buildConfigField "String", "API_KEY", "\\"v\\""``, a literal fallback (``JWT_SECRET =
  process.env.JWT_SECRET || "v"``, ``or "v"``, ``?? "v"``, ``?: "v"``), a variable's default
  (``${DB_PASSWORD:-v}``, Spring's ``${db.password:v}``, Helm's ``{{ .Values.password | default "v" }}``), name/value entries (Kubernetes ``- name: NAME`` / ``value: v``,
  ECS ``{"name": "NAME", "value": "v"}`` as text or parsed, AWS tags ``{"Key": "NAME", "Value":
  "v"}``, .NET ``<add key="NAME" value="v"/>``, Spring ``<property name="password" value="v"/>``),
  XML elements (``<password>v</password>``, ``<passphrase>``, with attributes too; a key's path, Maven's
  ``<privateKey>~/.ssh/id_rsa</privateKey>``, stays), elements a ``name``/``key`` attribute names
  (``<property name="hibernate.connection.password">v</property>``, ``<entry key="db.password">v</entry>``,
  Android's ``<string name="api_key">k</string>`` when machine-made, ``android:name``/``android:value``), a
  plist's ``<key>APIKey</key><string>v</string>``, and XML attributes (Tomcat's ``<user
  password="v"/>``), HTML password fields (``<input type="password" value="v">``, any case),
  ODBC's braced values (``Pwd={p;w0rd}``; ``PWD={password}`` is a template), a YAML ``!!str`` tag before
  the value (``!Ref``, ``!vault``, ``!secret`` tags are references and stay, as do YAML's null ``~`` and an
  alias, ``*db_pw``, whose anchor the text sets or whose name is no generated password's), a value quoted with the
  other quote inside a string (Kafka's ``'... password="pw";'``, escaped ``\\"pw\\"`` in JSON),
  a wallet's seed words (``MNEMONIC``, ``seed_phrase``, ``recoveryPhrase``: twelve words or more) and private key (``PRIVATE_KEY=0x<64 hex>``,
  and 0x + 64 hex handed to ``new Wallet(...)``, ``privateKeyToAccount(...)``, ``from_key(...)``, Hardhat's ``accounts: [...]``),
  where the name ends in password, passwd, passphrase, passcode, pwd, psk, secret, token, api_key,
  a password's word in another language before ``=`` (``passwort=``, ``DB_KENNWORT=``, ``mot_de_passe=``,
  ``contrasena=``, ``wachtwoord=``, ``salasana=``, ``senha=``),
  access_key, secret_key, private_key, client_secret, shared_key, secret_key_base (any case,
  any ``_ - .`` separators, camelCase too), or is an UPPER_CASE name ending in ``_KEY``,
  ``_SALT``, ``_PASS`` or ``_PW``, or an HTTP header's name ending in ``-Key`` (``DD-APPLICATION-KEY``,
  ``X-Tenant-Key``; app, application, subscription, license, ingest and admin keys too; an API provider's
  key in any case, ``openai_key``, ``stripeKey``), each also with a variant after it (``DB_PASSWORD_PROD``,
  ``API_KEY_2``, ``password2``, ``password_confirmation``); ``auth``/``_auth`` (docker's config.json, .npmrc) when its value is
  base64 of ``user:password`` or the pair in clear (``auth: bob:pw``; ``basic_auth``, ``http_auth``, Yarn's
  ``npmAuthIdent`` too); ``key`` beside a ``username`` (kaggle.json); ``?key=``/``&auth=`` in a URL's query; Bundler's ``BUNDLE_GEMS__HOST__COM=user:PW`` (the password); the name stays, the value goes [assignment]; on a
  config line (the name opens its line: ``.env``, YAML, ``export``) an unquoted value runs to the first space,
  shell and code punctuation included (``DB_PASSWORD=Xy7&Kp9q``, ``password: Ab12,Cd34``,
  ``API_KEY=Zq8<9xY>Lm2``), unless it is code in one word (``token=get_token()``, ``TOKEN=$(gh auth
  token)``) or the punctuation starts HTML (``x<br>``, ``x</td>``), and a closing bracket at the end of a
  config line that opened none is no call's (``password: Xy7Kp9q)``: the value goes, the bracket stays); a double quote ends it (it may close
  the string the line is in), so ``x9"Qz7`` and ``x9<b>Qz7`` are cut there, known limits; elsewhere on a line
  (a connection string's ``Password=Xy7&Kp9q;``, "the key passphrase: X&3kP9q") the run goes to its first
  space too (sentence punctuation at its end stays) where its part before the punctuation was a secret, or the
  whole run looks random, or, under a password's name, has a digit and no name after the cut; after a ``;``
  setting a ``Password=``/``Pwd=`` value runs to its ``;``, spaces and quotes included
  (``Server=db;Password=8 6UX4L;``); a value that
  opens with ``$``, ``%`` or ``{`` (or holds braces) is a template or reference only if nothing random is left
  once its fields and names are out (``"$3pAAkVfTWs69"`` goes, ``${DB_PASSWORD}`` stays); a quoted value turned
  down (``"... User=your_user;Password=PW"``) is read again for a secret inside it [assignment]. The same without
  ``=`` (the value to its space, punctuation included, unless it is code: ``$(cat f)``, ``get_pw()``): Dockerfile ``ENV NAME value``, ``setenv``/``set -gx NAME value``, ``aws configure set
  NAME value``, ``npm config set NAME value``, Apache's ``SetEnv NAME value``, Caddy's ``env NAME value``,
  Passenger's ``passenger_env_var NAME value;``, nginx's
  ``fastcgi_param NAME value;`` (uwsgi's, scgi's), ``php_admin_value NAME value``, ``proxy_set_header NAME value;``
  [assignment]; ipsec.secrets' ``: PSK "K"`` (``EAP``, ``XAUTH``, ``0s`` base64), Cisco's ``crypto isakmp key K``,
  ``pre-shared-key K``, ``tacacs-server|radius-server key K``, Bundler's ``bundle config HOST user:PW`` [cli-flag]; R's
  ``api_key <- "v"`` as ``=``; bindings with a space before the literal (Clojure's ``{:password "v"}``,
  Elixir's ``@api_key "v"``, Lisp's ``(setq gptel-api-key "v")``/``(def api-key "v")``), Vim's ``let
  g:openai_api_key = "v"``, infix pairs (Kotlin's ``"password" to "v"``, Scala's ``"api_key" -> "v"``); ``GITHUB_PAT``/``GITLAB_PAT`` as token names; an API client's
  ``auth:`` (``new Octokit({auth: "T"})``, Notion's ``new Client({auth: "T"})``); cookie-signing
  key lists (Koa's ``app.keys = [...]``, ``keys: [...]``/``secret: [...]`` in ``cookieSession({...})``/
  ``session({...})``, ``cookieParser([...])``) [assignment, code-literal]; OpenVPN's inline
  ``<auth-user-pass>`` (``<http-proxy-user-pass>``) second line [assignment]; ``.netrc`` ``machine h login u
  password PW`` (its ``default login u password PW`` entry too) [netrc-password]; redis.conf ``requirepass``/``masterauth`` (quoted too: ``CONFIG SET requirepass "PW"``) [redis-password]
  (both read PW to whitespace, quotes, backslashes and a ``#`` inside it included);
  Elasticsearch's ``PASSWORD elastic = PW`` [cli-flag]; Redis's ``ACL SETUSER u on >PW`` [redis-password];
  Jenkins's first-start banner's initial admin password [cli-flag];
  ``.pgpass`` lines ``host:port:db:user:PW`` (spaces in PW too; ``\\:`` escaped colons too; also starting in a JSON string
  inside text, ``x "h:5432:db:u:PW\\nfoo"``, or after its escaped breaks, or in single quotes, ``echo
  'h:5432:db:u:PW' >> ~/.pgpass``; a tag or escaped break after
  the password stays; as one unquoted word of a command that names the file, ``echo h:5432:db:u:PW
  >> ~/.pgpass``, ``printf '%s\\n' h:5432:db:u:PW > $PGPASSFILE``, ``| tee -a ~/.pgpass``, or one that
  writes to a variable an earlier line set to the file, ``F=~/.pgpass`` then ``echo h:5432:db:u:PW >> $F``;
  printf's argument where the format's password field is ``%s``, ``printf 'h:5432:db:u:%s\\n' PW``)
  [pgpass-password]; SQL ``CREATE USER x WITH PASSWORD
  'PW'``, MySQL's ``PASSWORD('PW')`` and ``SET PASSWORD FOR 'u'@'h' = 'PW'``, ``IDENTIFIED BY 'PW'`` (Oracle's bare ``IDENTIFIED BY PW`` too), Redshift's ``SECRET_ACCESS_KEY 'K'``/``SESSION_TOKEN 'T'`` and DuckDB's ``SECRET 'K'``, and an ``INSERT INTO t
  (name, password) VALUES ('u', 'PW')``'s literal under a column that names a secret, every row (``crypt('PW', ...)``
  too; placeholders stay; ``REPLACE``/``UPSERT INTO``, ``INSERT INTO t (...) SELECT 'u', 'PW'``; with no column
  list, ``INSERT INTO t VALUES (...)``, the columns of a ``CREATE TABLE t (...)`` earlier in the text, as pg_dump
  ``--inserts`` and mysqldump write them: with neither, a known limit), a hashing or encrypting call's literals under
  a secret's column, ``SET password = crypt('PW', gen_salt('bf'))``, ``MD5('PW')``, ``WHERE passwd = SHA2('PW', 256)``,
  ``password_hash = HASHBYTES('SHA2_256', 'PW')`` (the algorithm's name stays), and pg_dump's
  ``COPY t (name, password) FROM stdin;`` rows, the field under such a column [sql-password]; every
  value under ``data:``/``stringData:`` of a Kubernetes ``kind: Secret``, YAML or JSON, whatever
  its key [kubernetes-secret]; signed URLs' ``X-Amz-Signature=``, ``X-Goog-Signature=``,
  ``Signature=`` [url-signature]; password hashes in crypt form (.htpasswd ``$apr1$``/``$2y$``,
  /etc/shadow ``$6$``/``$y$``, argon2), the scheme kept [password-hash]
- command-line flags [cli-flag]: ``--password VALUE`` style long flags (also ``--pass``,
  ``--account-key``, ``--private-key``, ``--auth-key``, ``--authkey``, ``--license-key``, ``--master-key``,
  ``--signing-key``...; a key flag's file path, ``--private-key ~/.ssh/id_ed25519``, stays); and per program, short
  ones: ``mysql -pPW`` (glued; ``-p db`` prompts), ``sshpass -p PW``, ``curl -u user:PW`` /
  ``--user user:PW`` (``-u KEY:``, a key as the user, too), ``redis-cli -a PW``, ``docker|podman|helm|cf|oc login -p PW``, ``smbclient -U
  user%PW``, ``ldapsearch -w PW`` (``ldappasswd -s NEW -a OLD``,
  ``slappasswd -s PW``), ``mongo -p PW``, ``sqlcmd -P PW``, ``zip -P PW``, ``7z -pPW``,
  ``evil-winrm``/``crackmapexec``/``nxc``/``rdesktop``/``twine -p PW``, ``dotnet nuget ... -p PW``,
  PuTTY's ``-pw PW``, xfreerdp's ``/p:PW`` (these in a diff's ``+``/``-`` lines too: ``+curl -u bob:PW``), PowerShell-style ``-Password``/``-ApiKey`` (any program),
  ``ssh-keygen -N PW``, ``keytool|jarsigner -storepass PW``, ``useradd|usermod|hydra -p PW``,
  ``cqlsh|cypher-shell|rabbitmqadmin|certutil -p PW``, ``influx|doctl|codecov -t TOKEN``, ``consul|nomad
  -secret|-token T``, ``etcdctl --user root:PW``, ``crane|regctl ... login -p PW``,
  ``smbmap -p PW``, ``winexe|smbget -U user%PW``, ``ab -A``/``hey -a``/``hurl --user``/``wfuzz --basic``/``nikto -id``
  ``user:PW``, ``gobuster -P PW``, ``sqsh -P PW``; any program's
  ``--creds``/``--src-creds``/``--dest-creds``/``--basic-auth``/``--proxy-user``/``--proxyauth``/``--auth-cred``/``--auth``
  ``USER:PW`` (after the colon); ``-p PW`` after ``-u USER`` in a command no table knows (``snowsql -u me -p PW``;
  not a port, pid, path, file or sudo's prompt),
  ``--secret-string PW`` (``aws secretsmanager``), SecretManagement's ``Set-Secret -Secret PW``, ``redis-server --requirepass PW``, ``gh secret
  set NAME --body V``, openssl's ``-passin pass:PW`` and cmdkey's ``/pass:PW``; a password piped
  to a program that reads it from stdin (``echo PW | sudo -S``, ``| docker login
  --password-stdin``, ``| chpasswd``, ``| gpg --passphrase-fd 0``, ``| gh secret set``, ``|
  wrangler secret put``, ``| vercel env add``, ``| gcloud secrets versions add``, ``pass insert``,
  ``| passwd``, ``| smbpasswd -s``, ``| kinit`` (``yes PW |`` too),
  ``gh auth login --with-token``, ``-o password_stdin``, ``--token-stdin``, ``--from-file=k=/dev/stdin``,
  ``secret-tool store``, ``keyring set``), or handed to it in a here-string (``<<< PW``) or a
  one-line here-document; PowerShell's ``ConvertTo-SecureString 'PW' -AsPlainText`` (``"PW" | ConvertTo-SecureString`` too); the same flags in an argv list in code, each word a
  quoted item (``subprocess.run(["sshpass", "-p", "PW"])``, ``exec.Command("redis-cli", "-a",
  "PW")``, ``spawn('psql', ['--password', 'PW'])``); and passwords that a program takes as a
  positional argument: ``htpasswd -b FILE USER PW`` (``-nb USER PW``), ``sqlplus USER/PW@DB`` (Oracle's JDBC
  ``jdbc:oracle:thin:USER/PW@...`` and ``userid=USER/PW`` too [url-password]), ``tsql|osql -P PW``, ``vsql -w PW``,
  ``net use \\\\srv\\share [/user:U] PW``, ``ansible-vault encrypt_string PW``, pdftk's ``user_pw PW owner_pw PW`` (``input_pw PW``), qpdf's ``--encrypt USER OWNER 256``,
  ``mkpasswd [-m M] PW``, ``wpa_passphrase SSID PW``, and after a subcommand, from one table (``_POSITIONAL_SECRETS``):
  ``cargo login TOKEN``, ``vault login TOKEN``, ``bw unlock PW``, ``bw login EMAIL PW``, ``rabbitmqctl
  add_user|change_password USER PW``, ``poetry config http-basic.REPO USER PW`` / ``pypi-token.REPO
  TOKEN``, ``nmcli ... password PW`` / ``wifi-sec.psk PW``, ``mc alias set ALIAS URL KEY SECRET``, ``openssl passwd [-6] PW``, ``composer config
  http-basic.REPO USER PW`` / ``github-oauth.HOST TOKEN``, ``mosquitto_passwd -b FILE USER PW``,
  ``mysqladmin ... password PW``, ``git config [--global] github.token T`` (a dotted key ending in
  token, pass, password, secret: ``hub.oauthtoken``, ``sendemail.smtpPass``; not ``user.signingkey``), ``snyk auth TOKEN``, ``nuget setapikey KEY``, ``neo4j-admin set-initial-password PW``, ``pulumi config set --secret NAME VALUE`` (``--secret`` is a switch there: the name stays);
  rclone's ``config create|update|password NAME [TYPE] KEY VALUE...`` (or ``KEY=VALUE``), the
  values of ``pass``, ``key``, ``client_secret`` and other secret keys, and ``rclone obscure PW``
  [cli-flag]; rclone.conf's ``pass = x`` (any config line opened by ``pass``) [assignment]
- a pentest tool's hit: NetExec's/CrackMapExec's ``[+] corp.local\\admin:PW (Pwn3d!)``, Metasploit's
  ``[+] ... Success: 'CORP\\admin:PW'`` (the ``[+]`` anchor) [cli-flag]; Impacket's targets,
  ``DOMAIN/user:PW@host`` in any command (``secretsdump.py``, ``psexec.py``, ``impacket-wmiexec``; a
  container image's ``repo/name:tag@sha256:...`` stays) and ``DOMAIN/user:PW`` after its Kerberos
  scripts (``GetUserSPNs.py``, ``getTGT.py``) [cli-flag]; HTTPie's and xh's ``-a TOKEN`` under
  ``-A bearer`` (``--auth-type=bearer --auth=T``; ``-a user:PW`` as curl's ``-u``) [cli-flag] and their
  query parameters under a secret's name (``http x.com api_key==T``) [assignment]
- ``AUTH`` commands: Redis's ``AUTH [USER] PW`` at redis-cli's prompt (``127.0.0.1:6379> auth PW``)
  or in a script [redis-password]; SASL in SMTP transcripts: ``AUTH PLAIN <base64>``, ``AUTH
  XOAUTH2 <base64>``, and the line answering ``334 UGFzc3dvcmQ6`` after ``AUTH LOGIN`` [sasl-credentials]
- mail logins in the clear: IMAP's ``a001 LOGIN user PW``, POP3's ``PASS PW`` after ``USER``,
  msmtprc's ``password PW`` line (the value mixing letters with digits or symbols), mbsync's ``Pass PW``
  in an ``IMAPAccount``/``IMAPStore`` block, a ``PassCmd``/msmtp ``passwordeval`` that only echoes
  a literal (``"echo PW"``; one that runs a command stays), offlineimap's ``remotepass = PW`` [mail-password]; LDAP: ``bindpw PW``, ``rootpw PW`` as a config line, LDIF ``userPassword:``,
  cn=config's ``olcRootPW: {SSHA}HASH`` and ``olcRootPW:: BASE64`` [ldap-password] (a plain
  ``olcRootPW: PW`` is an assignment); a ``{SSHA}``/``{CRYPT}``/``{PBKDF2}``... scheme (Spring's ``{noop}``, ``{bcrypt}`` too) before a
  value under any secret name is no template: the value goes, the scheme stays
- secrets handed to code by position, as string literals: ``smtp.login(user, "PW")`` (imaplib,
  poplib, ftplib), ``simple_bind_s(dn, "PW")``, ``jwt.sign|encode|decode|verify(x, "KEY")``,
  ``createHmac(alg, "KEY")``, ``OpenSSL::HMAC.hexdigest(alg, "KEY", d)``, ``hmac.new(b"KEY")``,
  ``hmac.New(h, []byte("KEY"))``, ``new SecretKeySpec("KEY".getBytes(), ...)``,
  ``NetworkCredential("u", "PW")`` and Java's and the AWS SDK's (user, password) classes, OkHttp's
  ``Credentials.basic("u", "PW")``, Azure's ``ClientSecretCredential(t, c, "S")``, tweepy's
  ``OAuthHandler(k, "S")``, ``algoliasearch(id, "K")``, a cipher's or MAC's key (``createCipheriv(alg, "K", iv)``,
  CryptoJS's ``AES.encrypt(d, "K")``/``HmacSHA256(m, "K")``, jjwt's ``signWith(alg, "K")`` and ``Keys.hmacShaKeyFor("K".getBytes())``),
  ADO's ``conn.Open(dsn, "u", "PW")`` (VBScript's ``cn.Open "DSN=x", "u", "PW"``), XMLHttpRequest's and MSXML's
  ``.open("GET", url, false, "u", "PW")`` (VBScript's ``.Open "GET", url, False, "u", "PW"``; three arguments stay;
  a URL or a DSN literal of any length),
  WinHTTP's ``.SetCredentials "u", "PW", 0``, API clients built
  with a token (PyGithub's ``Github("T")``/``Github("u", "PW")``/``Auth.Token("T")``, Slack's
  ``WebClient("T")``, ``new Stripe("T")``, python-gitlab's ``Gitlab(url, "T")``, a Twilio client
  with a literal account SID, ``Client("AC...", "T")``), express's ``cookieParser("S")``,
  PHP's ``oci_connect("u", "PW")``, ``odbc_connect|db2_connect|ssh2_auth_password|imap_open|ftp_login(x, "u", "PW")``,
  ``ldap_bind($ds, $dn, "PW")``, sqlsrv's ``"UID" => "u", "PWD" => "PW"``,
  ``new PDO($dsn, "u", "PW")``, ``mysqli_connect(h, "u", "PW")``, ``getConnection(url, "u",
  "PW")``, ``pymysql.connect(h, "u", "PW")``, ``pymssql.connect(h, "u", "PW")``, ``FTP(h, "u",
  "PW")``, ``pika.PlainCredentials("u", "PW")``, ``new Sequelize(db, "u", "PW")``, ``Net::FTP.new(h, "u", "PW")``,
  Go's ``smtp.PlainAuth("", "u", "PW", h)`` and jwt-go's ``SignedString([]byte("KEY"))``, password
  hashing, checking and key derivation handed the password (``bcrypt.hashpw(b"PW")``,
  ``bcrypt.hash|compare('PW', ...)``, jBCrypt's ``BCrypt.hashpw("PW", s)``, Go's
  ``bcrypt.GenerateFromPassword([]byte("PW"), c)`` / ``CompareHashAndPassword(h, []byte("PW"))``,
  ``BCrypt::Password.create('PW')``, ``argon2.hash|verify``, argon2-cffi's ``PasswordHasher().hash("PW")``
  / ``ph.verify(h, "PW")``, passlib's ``pbkdf2_sha256.hash("PW")`` and ``pwd_context.verify("PW", h)``, Spring's ``passwordEncoder.encode("PW")`` (any
  receiver the text declares a ``PasswordEncoder`` or whose name says so, ``pwEncoder``; any encoder's two-argument
  ``encoder.matches("PW", h)``; a TextEncoder's ``encode("x")`` stays), Werkzeug's ``check_password_hash(h, "PW")``,
  Laravel's ``Hash::check('PW', h)``, Rust's ``bcrypt::verify("PW", h)``, ASP.NET Identity's ``HashPassword(u, "PW")`` /
  ``VerifyHashedPassword(u, h, "PW")``, crypt(3)'s ``crypt('PW', salt)`` (pgcrypto, PHP, Python's ``crypt.crypt``), a literal compared in constant time, either argument (``hmac.compare_digest(k, "S")``,
  ``compare_digest("S", k)``, Go's ``subtle.ConstantTimeCompare([]byte(t), []byte("S"))``, Node's
  ``crypto.timingSafeEqual(Buffer.from(s), Buffer.from("S"))``; also against a prefix, a format or a
  lookup, ``compare_digest("sha256=" + x, "S")``, ``compare_digest(f"sha1={d}", "S")``,
  ``compare_digest(request.headers["X-Sig"], "S")``; not the prefix or
  format itself, ``compare_digest("sha256=" + mac.hexdigest(), sig)``, nor two literals, a test of the function),
  PHP's ``password_hash|password_verify('PW', ...)``, ``make_password('PW')``,
  ``generate_password_hash('PW')``, ``hashlib.pbkdf2_hmac(alg, b"PW", ...)``, ``hashlib.scrypt(b"PW")``,
  Node's ``crypto.pbkdf2Sync|scryptSync('PW', ...)``, .NET's ``Rfc2898DeriveBytes("PW", ...)``), a
  cipher's key (``Fernet(b"K")``, ``AESGCM(b"K")``, ``AES.new(b"K", mode)``), ``cx_Oracle.connect("u", "PW", dsn)``, ldap3's
  and kombu's ``Connection(server, "u", "PW")`` (the user a literal too) [code-literal]; setters and
  builders: ``setPassword("PW")``, ``setApiKey("K")`` (PHP's static ``Stripe::setApiKey('K')`` too), ``.withClientSecret("S")``,
  ``.password("PW")``, Go's ``ssh.Password("PW")``, Redis clients' ``.auth("PW")``/``->auth('PW')``, Django's ``user.set_password("PW")``/``check_password("PW")`` [assignment]
- code comparing a secret-named variable to a literal, either side first: ``if secret == "S"``, ``token === 'T'``,
  ``api_key != "K"``, ``"S" == secret``, ``('T' !== token)``,
  Java's ``password.equals("PW")`` and ``"PW".equals(password)`` (judged as an assignment to that name
  would be: ``== ""``, ``== None``, ``token == "EOF"``, a token name's literal under 10 characters stay) [assignment]
- terminal dialogues: ``aws configure``'s ``AWS Secret Access Key [None]: K`` [aws-secret-key];
  Vault's ``Key  Value`` tables and PowerShell's ``Name  Value`` ones (``Get-ChildItem env:``) (a
  row whose key names a secret: ``password``, ``secret_id``, ``token``), Consul's ``SecretID:`` [assignment]; an expect script's ``send "PW\r"`` after
  ``expect "*password:*"`` [expect-password]; ``ngrok config add-authtoken T`` [cli-flag];
  ``SSHPASS=``, ``REDISCLI_AUTH=``, ``pass``/``pw`` right after a user's field (``user: bob, pass: PW``) [assignment]; Ansible's ``{{ 'PW' | password_hash(...) }}`` [assignment]; ``net user NAME PW``, ``mosquitto_pub -P PW``,
  ``lftp -u user,PW``, ``curl --oauth2-bearer T``, ``wmic /password:PW`` [cli-flag or assignment];
  ``snmpwalk -A PW -X PW``, ``ipmitool -P PW``, ``transmission-remote -n user:PW``; device configs: Cisco's
  ``username u password 0 PW``/``enable secret 0 PW`` (type 7 too), HAProxy's ``insecure-password PW``,
  fetchmail's ``user "u" password "PW"`` [cli-flag]
- a literal typed into a password field by browser-automation code (Playwright's ``page.fill("#password",
  "PW")``/``getByLabel("Password").fill("PW")``, Cypress's ``cy.get('#password').type('PW')``, Selenium's
  ``send_keys``, Capybara's ``fill_in "Password", with: "PW"``) [assignment]; a literal written to a file
  whose name says secret (``echo PW > ~/.vault_pass``, ``printf '%s' PW > /run/secrets/db_password``,
  ``| sudo tee /etc/app/api_key``) [assignment]
- a change under a secret's name shown old -> new (Terraform's plan ``~ admin_password = "a" -> "b"``: both go),
  PHP's var_dump (``["api_key"]=>`` / ``string(10) "v"``), a two-column table's row whose key names a
  secret (Markdown's ``| API_KEY | v |``, psql's expanded ``password | v``; a cell with spaces is prose)
  [assignment]
- a YAML block scalar under a secret's name (``password: |`` and its indented lines); writes to a
  key store under a secret's name (``consul kv put app/db/password PW``, ``aws ssm put-parameter
  --value PW`` with a secret-named ``--name`` or ``--type SecureString``, ``az keyvault secret set
  --value PW``) [assignment, cli-flag]
- prose that names a secret printer and quotes what it printed: "I ran op read op://dev/db/password
  and got PW", "`pass show x` prints PW", "echo $DB_PASSWORD gives me PW", "aws configure get
  aws_secret_access_key printed PW", "kubectl get secret ... | base64 -d gives me PW", "printenv
  DB_PASSWORD outputs PW", "sops -d x.yaml shows PW", "`$env:API_KEY` is PW" (any printer of
  ``secret_output``'s table, found by its own words or by a secret's name as the command's last
  word; prints, outputs, shows, returns, gives, says, yields, displays, dumps, spits out...), or the command on a line
  of its own and a one-token line after it (``bw get password x``, ``heroku auth:token`` too; a command that
  ``command_prints_secret`` knows, a verb of printing, a value that mixes letters with digits or
  symbols; in a JSON string inside text, an escaped break or escaped quotes end the value too, ``x "echo
  $DB_PASSWORD gives me PW\\nok"``, and a command that crosses an escaped break is no command) [command-output]
- prose that hands one over: "the password is PW" ("is: PW" too; a quote, a backslash or an unclosed bracket in PW is its own), "my github token is T", "Here is my API
  key: K", "private key: K" (as ``wg show`` prints one), "my password PW doesn't work", "use pw PW to log in", "the password for admin is PW",
  "the password for the staging DB is PW", git's ``Password for 'https://bob@github.com': PW``,
  "set the root password to PW" (after a verb of setting), "Admin password set to PW", "the password
  (PW) works", MySQL's log "A temporary password is generated for root@localhost: PW",
  "user `admin`, password `PW`" (a value in backticks right after the name), "password:" in other
  languages (``Passwort: PW``, ``contraseña: PW``, ``пароль: PW``, ``密码：PW``, ``パスワード: PW``) and in their
  sentences ("Le mot de passe est PW", "Das Passwort lautet PW", "密码是PW"), a Markdown list's
  "- **Password**: `PW`" / "**API Key:** K", "using token T", and a chat's summary naming a
  variable: "I've set `DB_PASSWORD` to `PW`", "The `SECRET_KEY` is now `K`",
  ``[sudo] password for bob: PW``, "login with admin / PW", "the creds are admin/PW", "credentials:
  bob:PW", "creds=bob:PW", "log in with admin / PW", "sign in as bob:PW", "Use admin:PW to log in",
  "user/pass: admin/PW" ("username/password: root/PW": the user stays; after such a label any
  non-placeholder second half goes; the label in brackets too, "creds (user/pass): admin/PW",
  "credentials (username / password) = root/PW", "creds [user/pass]: admin/PW", "**Login
  (user/pass)**: bob/PW", "Login (user / pass) - admin / PW", and "user/pass = admin/PW"; a colon
  or a comma in a bracketed label, "creds (user:pass): admin:PW", "login (username, password):
  admin, PW" (the pair's comma after a slash label too: "creds (user/pass): admin, PW", "user/pass:
  admin, PW"); with no separator, "user/password root/PW", or a space or a comma in the pair,
  "user/password: admin PW", only a value mixing letters with
  digits or symbols, and not after a path's ``/`` nor a command that takes paths (``move``, ``xcopy``, ``svn mv`` too), ``mv user/password
  lib/Auth2x``; a user and a placeholder, ``user/password: admin <password>``, both stay), when the value
  mixes letters with digits or symbols (never a word: "the password is stored in Vault"), or is a word in quotes ('the password is
  "swordfish"'; a bare letters-only password in prose is a known limit); a closing tag or an HTML element's opening tag right after
  the value (``<p>the password is PW</p>``, ``PW<br>``, ``PW<span>``) stays, and an escaped break ends it (``x "the password is PW\\nok"``; escaped quotes around it stay,
  ``\\"PW\\"``); a sentence's stop after the value stays, but a ``!`` glued to it is the password's
  (``the password is Hunter2!``; here and in every prose, pair and printed-output form) [prose-secret]
- Terraform ``variable "db_password" { default = "V" }`` and any variable with ``sensitive =
  true`` [assignment]; a JSON record that says its value is secret (``terraform output -json``'s
  ``{"sensitive": true, "value": V}``, 1Password's ``{"type": "CONCEALED", "value": V}``, SSM's
  ``{"Type": "SecureString", "Value": V}``, a form's ``{"type": "password", "value": V}``) [assignment]; Azure's ``keys list`` JSON (``{"keyName": "key1", "value": "V"}``) [azure-key]
- output that a command's name makes secret, in a pasted terminal session (``$ pass show x``
  and the lines it printed; PowerShell's ``PS C:\\> $env:DB_PASSWORD``, ``PS> ``, cmd.exe's
  ``C:\\src>type db_password.txt``) or a ``!``-mode turn's ``<bash-stdout>``, also escaped inside a JSON
  string (``\\n`` line breaks, ``\\"`` quotes: a transcript's line in grep's output) [command-output]; the same
  for a Bash tool call's result is done where call and result meet (``secret_output.py``, ``scrub.py``)

A quoted value with an escaped quote inside it (shell's ``'a'\\''b'`` and ``'a'"'"'b'``, SQL's, YAML's and
PowerShell's ``'a''b'``, ``"a\\"b"``, PowerShell's ``"a`"b"``, CSV's ``"a""b"``) is read to its real closing
quote, whichever rule marked its start (``-p'...'``, ``--password``, ``curl -u``, ``IDENTIFIED BY``, an assignment).

Spellings the rules do not read as typed are read decoded (``_redact_views``), in a window of
about 1 KB each way around where one occurs: a secret escaped twice or more (JSON in a JSON string
in a JSON string, ``\\\\\\"password\\\\\\": ...``, any depth; ``\\x3d``, ``\\u003d``), percent-encoded
(``password%3DPW``, ``%22password%22%3A%22PW%22``, ``pass%77ord``, twice: ``%253D``; UTF-8 bytes,
``%E2%80%8B``; hex letters in lower case, ``%5f``, only inside a word, ``api%5fkey``, or near a ``%3d``, ``%3a`` or
``%2c``: ``"%2d"`` is printf's), in
HTML entities (``&quot;``, ``&#61;``, ``&#8203;``), in Unicode's compatibility forms of ASCII
(``DB_PASSWORD＝PW``, ``：``, ``﹦``, ``＂``, full-width or mathematical letters; and ``꞉``, ``∶``), with other
spaces (no-break, ideographic), or with invisible characters inside (zero-width space, joiners,
word joiner, soft hyphen, BOM, marks of direction, variation selectors, combining marks on an
ASCII letter, in ``ghp_...`` or in a name). The marker replaces the whole span the secret's
characters came from (``%3DPW`` keeps its ``%3D``, a token its neighbours). Cyrillic and Greek
letters that look Latin are read as Latin in a word that mixes them with ASCII letters and holds no
other letter of their script (a Cyrillic ``р`` and ``а`` in ``раssword``, ``ghр_...``); a word
spelt wholly in them (``рассword`` has no Latin look-alike for each letter, but a rarer letter could
stand in for every one) is not read so, a known limit. Provider tokens
glued to a word by ``_`` or ``-`` (``backup_ghp_...``) are read for a body of at most 256
characters: a longer one keeps its tail, a known limit.

Markup that touches its text is a text boundary: Claude Code stores a ``!`` turn's output as
``<bash-stdout>FOO=1\nDB_PASS=x</bash-stdout>`` (trimmed, so the tags touch the first and last
lines), a slash command's as ``<local-command-stdout>...</local-command-stdout>``, and HTML puts
cells in ``<td>``. Read whole, ``x</bash-stdout>`` looked like code (``<`` after a value is a
generic's) and ``<bash-stdout>curl -u u:pw`` had no line start before ``curl``. So after the
whole-text pass (which keeps the rules that read across tags: a ``!`` turn, ``<password>x</password>``),
each run of text between tags is redacted again as a text of its own (``_redact_between_tags``).
Only tags whose name also appears as a closing tag ``</name>`` or an empty one ``<name/>`` cut the
text (and HTML's ``<br>``, ``<hr>``, ``<img>``..., and any HTML element's opening tag, ``<p>``,
``<span>``, ``<div class="x">``, even with no closing one: ``DB_PASSWORD=x<br>`` kept its value), so a
generic (``Option<String>``, ``Vec<u8>``) stays part of its text; a text with neither ``</`` nor ``/>`` pays two substring tests, and one with a ``<`` a scan for an element's tag.

A value under a secret name that is shaped like code is kept only when it is a reference: a
dotted identifier path (``token = self.token``, ``api_key=config.api_key``, ``password:
os.environ["X"]``) that does not look random (``_looks_random``: ``eyJ``, three or more
letter/digit switches, or random-looking case in a long run), so ``session_token: eyJx.y.z``
and ``token: abc123.def456.ghi789`` go; so does, under a password's name on a config line, one that mixes
case and digits and opens with no word a path opens with (``password: mRcyBM8emGY.XAF``; ``password:
config.dbPassword2`` stays). Three or more parts after a colon, or in a string, are
data (``session_token: aaa.bbb.ccc`` in YAML goes) unless the path starts at an object that code
reaches into (``this.props.token``, ``process.env.API_KEY``) or ends in a secret's name or a type
(``ctx.user.session_token``, ``torch.nn.Module``). Dict keys are redacted like any other string: a key that
is a token becomes its marker (numbered ``#2``, ``#3`` if two collapse into one).

Why ``[REDACTED:kind]``: the model trained on these traces should still see that a value was
there and what it was (it learns "a GitHub token goes here", not "tokens look like ghp_..."),
a person reading a trace can tell redaction from a missing value, and the marker cannot be
mistaken for a real value by any rule here (no rule matches inside ``[...]``), so redacting twice
changes nothing.

What is left alone, because training data loses more from mangling it than it gains: git SHAs,
UUIDs, paths, ``password: str`` and other type annotations, ``def check_password(password):``,
values that are code (``token = self.token``, ``key = os.environ["X"]``, ``f(password=password)``,
``cache_token = current_token``, ``getpass("Password: ")``, ``f"{token:02x}"``), values that name
things rather than hold secrets (``"input_token": "next_token"``, ``CACHE_KEY = "user"``, small
numbers), prose (``a token: see RFC 6750``), and placeholders (``YOUR_API_KEY``, ``<token>``,
``${TOKEN}``, ``$TOKEN`` (not ``$uperS3cret!``: no reference reads on from its ``$``), ``***``, ``xxxx``, values containing ``example`` (not as a word of its own beside a
random-looking part: ``prod-example-corp-8f7aQ2x9`` goes), empty values). People
choose passwords, so under a password name almost any literal value goes; under token and key
names the value must look machine-made (see ``_plausible_secret``). These rules were tuned by
running the module over this interpreter's site-packages and reading what it changed.

Speed: the daemon calls this on every string of every trace. Strings shorter than
``MIN_SECRET_CHARS`` come back untouched. For the rest, each rule names an anchor character
that all its matches contain (``_`` of ``ghp_``, ``-`` of ``sk-``, ``=`` of an assignment) and a
look-around test at it; one regex per anchor finds, in a few fast passes, which rules can match
at all, and only those run (the assignment rule only at the positions found). An anchor absent
from the text costs one substring test, and a guard of a character or two after each anchor
(``_ANCHOR_GUARDS``) turns away most of the dashes, dots and colons of ordinary output before
any look-behind runs. See ``_build_gates``; ``benchmarks/bench_redact.py`` measures it against
running every rule, and tests check that both give the same result. Prefixes with no such
character of their own (``machine``, ``requirepass``, ``Private-Lines:``, ``dapi``, ``login``,
``rabbitmqctl``) are anchors of several characters: a substring test each (about 1% of the time
each), so they are kept few; a rule that can, gates on an anchor that is scanned for already
(``bw unlock`` at ``b``, ``http-basic.`` at ``-``, ``AUTH`` at ``A``). Anchors sharing a
lower-case word (``password``, ``PASSWORD``, ``passwd``, ``requirepass`` share ``pass``) are
tested as a family first: one test of the word in the lower-cased text rules them all out.

Failures: a bug in here raises ``RedactionError`` naming the function and the exception type,
never the text (builtin exceptions can quote their input, and messages reach logs).

How well: ``benchmarks/bench_secrets.py`` runs this module and Yelp's detect-secrets over
tests/secret_corpus.py, 160 planted formats and 37 benign look-alikes; the tests require every
planted secret gone and every benign case unchanged.
"""

from __future__ import annotations

import binascii
import bisect
import difflib
import functools
import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from capture_daemon.secret_output import MARKER_PATTERN, command_prints_secret, redact_pasted_sessions

__all__ = [
    "MIN_SECRET_CHARS",
    "RedactionError",
    "is_secret_name",
    "marker",
    "redact_text",
    "redact_text_with_count",
    "redact_value",
    "redact_value_with_count",
]

# The shortest text any rule can fire on is "A_PW=x".
MIN_SECRET_CHARS = 6

_MARKER_OPEN = "[REDACTED:"


def marker(kind: str) -> str:
    return f"{_MARKER_OPEN}{kind}]"


# ---------------------------------------------------------------------------------------------
# Placeholders and secret names
# ---------------------------------------------------------------------------------------------

# Words that, as a whole value, are a type, a literal or a keyword of some language, not a secret:
# `password: str`, `token: string;`, `api_key = None`, `secret: Optional[...]`.
_CODE_WORDS = frozenset(
    """
    str string bytes int integer bool boolean number float double any none null nil true false
    undefined optional secretstr secretbytes object required text varchar char option vec
    await new lambda function async yield typeof not require import fn self this env os process
    """.split()
)
# A value that is just the word for what it stands for: https://user:pass@host, "password": "secret".
_GENERIC_WORDS = frozenset("pass password passwd pwd pw secret token key apikey api_key".split())
_PLACEHOLDER_WORDS = ("your", "changeme", "change_me", "placeholder", "replace", "redacted", "xxxx", "dummy")
# "example" marks a placeholder too (`example-password`, `sk_test_example`, AWS's documented
# `AKIAIOSFODNN7EXAMPLE`), unless it is a word of its own beside a part that looks random:
# `prod-example-corp-8f7aQ2x9` names a company and holds a real secret.
_EXAMPLE_WORD = re.compile(r"(?<![A-Za-z0-9])example(?:s)?(?![A-Za-z0-9])")
# Masks: ***, ..., ----, ••••, ???.
_MASK_CHARS = frozenset("*•.?#-_ ")
# A dotted identifier (`self.token`, `args.password`, `process.env.API_KEY`) is a reference, not a value.
_DOTTED_REF = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")


# An LDAP/Dovecot password scheme before a hash or a password: `{SSHA}W6ph5Mm5...`,
# `{CRYPT}$6$...`, `{PBKDF2-SHA512}10000$...`, `{PLAIN}pw`. Its braces are no template (`{token}`):
# what follows is the value, as guessable as a crypt(3) hash (olcRootPW, slapd.conf's rootpw, an
# OpenLDAP chart's `adminPassword: "{SSHA}..."`).
_HASH_SCHEME = re.compile(
    r"\{(?i:S?SHA(?:256|384|512)?|S?MD5|CRYPT|BLF-CRYPT|(?:SHA256|SHA512|MD5|DES)-CRYPT|BCRYPT|ARGON2I?D?"
    r"|PBKDF2(?:-SHA(?:1|256|512))?|PLAIN|CLEARTEXT|CLEAR|NTLM|LANMAN|CRAM-MD5"
    # (Spring Security's DelegatingPasswordEncoder ids: `{noop}pw` is the password in clear,
    # `{bcrypt}$2a$...`, `{scrypt}`, `{sha256}` its hashes: `.password("{noop}pw")`,
    # `spring.security.user.password={noop}pw`.)
    r"|NOOP|SCRYPT|LDAP|MD4|SHA-1|SHA-256|PBKDF2@SpringSecurity_v5_8|ARGON2@SpringSecurity_v5_8)\}(?P<rest>[^\s{}]{4,})"
)


# References and what may join them into a value: `$HOME/.ssh/key`, `${A}:${B}`, `$(cat f)`, `$1`.
# (`$` and one character: the name's rest is read as the joining characters, one way only, so that
# a long `$aaa...!` fails at once rather than trying every split of its name.)
_REFERENCES_ONLY = re.compile(r"(?:\$\{[^{}]*\}|\$\([^()]*\)|\$[A-Za-z_0-9@*#?$!-]|[\w./:@+,=~-])*")


def _is_placeholder(value: str) -> bool:
    """True for values that hold no secret: empty, masked, templated or already redacted."""
    v = value.strip()
    if not v or _MARKER_OPEN in v:
        return True
    first = v[0]
    scheme = _HASH_SCHEME.fullmatch(v) if first == "{" else None
    if scheme:  # {SSHA}<hash>: a value, unless what follows the scheme is a mask or a word for one
        rest = scheme.group("rest").lower()
        return set(rest) <= _MASK_CHARS or "***" in rest or any(w in rest for w in _PLACEHOLDER_WORDS)
    first, last = v[0], v[-1]
    # $VAR ${VAR} $(cmd) %VAR% %(name)s {{ var }} <token> [PAD] {token} f"{user}-{suffix}"
    # (Not a `$` that no reference reads on from: `$uperS3cret!`, `$ecr3t#1` are passwords.)
    if (first in "%{" or ("{" in v and "}" in v) or (first == "$" and _REFERENCES_ONLY.fullmatch(v))) and not _random_beside_template(v):
        return True
    if (first, last) in (("<", ">"), ("[", "]")):
        return True
    # A mask, or one character repeated (xxx, 0000); a lone "x" may be a real (bad) password.
    if set(v) <= _MASK_CHARS or (len(v) >= 3 and len(set(v.lower())) == 1) or "***" in v:
        return True
    low = v.lower()
    if low in _CODE_WORDS or low in _GENERIC_WORDS:
        return True
    return any(w in low for w in _PLACEHOLDER_WORDS) or ("example" in low and not _example_beside_random(v, low))


# A template's fields and a reference's name, as `_random_beside_template` takes them out.
_TEMPLATE_FIELD = re.compile(r"\{[^{}]*\}|%\([^()]*\)[a-z]|%[A-Za-z_]\w*%|%[a-z]")
_REFERENCE_NAME = re.compile(r"\$(?:[A-Za-z_]\w*|\d)")
_CRYPT_ID = re.compile(r"\$[\w-]{1,10}\$")


def _random_beside_template(v: str) -> bool:
    """Whether a value that opens like a template or a reference (`$`, `%`, `{`) or holds braces
    is a password after all: what is left, fields and names taken out, looks random
    (`$3pAAkVfTWs69`, `%pS22tAGrpwqY`, `{s5mYpsoepjxh`, `Bj4kJ{}LGVSm5`). People put these
    characters first or anywhere in a password; `${DB_PASSWORD}`, `%(pw)s`, `{token}`,
    `Bearer {token}`, `$HOME/.pgpass` leave nothing random and stay placeholders."""
    if _CRYPT_ID.match(v):
        return False  # `$6$rounds=656000$salt$hash`, `$2b$12$...`: a crypt hash, the password-hash rule's
    rest = _TEMPLATE_FIELD.sub("", v)
    if rest.startswith("$") and not _looks_random(rest[1:].split("/", 1)[0]):
        rest = _REFERENCE_NAME.sub("", rest)
    rest = rest.lstrip("%{$")
    # (Random, or a password's mix: upper and lower case and a digit, eight or more, no name's `_`/`.`, no path.)
    mixed = (len(rest) >= 8 and not any(c in rest for c in "_./\\") and any(c.isdigit() for c in rest)
             and any(c.isupper() for c in rest) and any(c.islower() for c in rest))
    return mixed or _looks_random(rest)


def _example_beside_random(value: str, low: str) -> bool:
    """Whether "example" stands in `value` as a word of its own (between punctuation, not glued
    to letters as in `AKIAIOSFODNN7EXAMPLE`) and another part of it looks random: a real secret
    that happens to hold the word (`prod-example-corp-8f7aQ2x9`), no placeholder."""
    if "example" in _EXAMPLE_WORD.sub("", low):  # (glued to a letter or digit somewhere)
        return False
    return any(_looks_random(run) for run in _ALNUM_RUN.findall(value) if "example" not in run.lower())


# Names whose values people choose (anything goes, `hunter2`, `letmein`) ...
# (LDAP's `bindpw`/`rootpw`/`olcRootPW`; AWS Secrets Manager's `SecretString`, whatever it holds.)
_CHOSEN_TAILS = ("password", "passwd", "passphrase", "passcode", "pwd", "psk", "bindpw", "rootpw", "secretstring",
                 # ... in other languages, as a setting's name writes them (`passwort=`, `DB_KENNWORT=`,
                 # `mot_de_passe:`, `contrasena=`); `senha` alone, it also ends `resenha` (a review).
                 "passwort", "kennwort", "contrasena", "contraseña", "wachtwoord", "motdepasse", "losenord", "lösenord",
                 "passord", "adgangskode", "salasana")
# A wallet's seed words: `MNEMONIC="abandon ability ..."`, `seed_phrase`, `recoveryPhrase`: twelve
# words or more (an assembler's `mnemonic = "PUSH"` names an instruction).
_SEED_TAILS = ("mnemonic", "seedphrase", "recoveryphrase")
# ... and `pass`/`pw` as the last word of a longer name, never as the end of another word
# (bypass, compass, BYPASS) nor alone (`pw = getpass()`). Upper case (DB_PASS, SMTP_PW, .env
# style) is a password; in other cases code has compiler passes (`lowering_pass: PassType`), so
# `db_pass`, `smtpPass` count as _WEAK: only with a machine-made-looking value.
_PASS_TAIL_UPPER = re.compile(r"[_.-](?:PASS|PW)$")
_PASS_TAIL = re.compile(r"(?:[_.-]|(?<=[a-z0-9])(?=[A-Z]))(?:pass|Pass|pw|Pw)$")
# ... and names whose values machines make (long, random, nearly always with a digit).
_MADE_TAILS = (
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "privkey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "authkey",
    "clientkey",
    "accountkey",
    "sharedkey",  # WireGuard PresharedKey
    "secretkeybase",  # Rails SECRET_KEY_BASE
    "secretid",  # Vault AppRole's secret_id, Consul's and Nomad's SecretID
    # Keys named by what they sign or encrypt with: jwtKey, JWT_KEY, hmac_key, aesKey.
    "jwtkey",
    "hmackey",
    "aeskey",
    "cipherkey",
    "cryptokey",
    # Keys named by whom they let in: an app's, a subscription's, a licence's (New Relic's
    # `license_key` is its ingest key), an ingest endpoint's: DD_APP_KEY, applicationKey,
    # Ocp-Apim-Subscription-Key, NEW_RELIC_LICENSE_KEY, ingest_key.
    "appkey",
    "applicationkey",
    "subscriptionkey",
    "licensekey",
    "ingestkey",
    "adminkey",
    # A personal access token under its provider's name: R's and usethis's GITHUB_PAT, GITLAB_PAT,
    # Azure DevOps's AZURE_DEVOPS_EXT_PAT (a bare `_PAT` also ends `URL_PAT`, a regex).
    "githubpat",
    "ghpat",
    "gitlabpat",
    "devopspat",
    "devopsextpat",
    "adopat",
)
# The shell keeps the working directory in PWD/OLDPWD: `env` output must survive.
_NOT_SECRET_NAMES = frozenset({"pwd", "oldpwd"})
# Whole names that hold a password but end in no telling word: sshpass's and redis-cli's variables.
# (offlineimap's `remotepass`; its `remotepassfile` is a path and `remotepasseval` code: neither.)
_CHOSEN_NAMES = frozenset({"sshpass", "rediscliauth", "remotepass", "senha"})
_NAME_SEPARATORS = str.maketrans("", "", "_-.")
# What may follow a secret's name and leave it one: a number or version, a stage, a rotation, a
# form's confirmation field (each needs the name before it to be a secret's on its own).
_VARIANTS = ("prod", "production", "dev", "development", "test", "testing", "staging", "stage", "qa", "uat",
             "old", "new", "prev", "previous", "next", "backup", "bak", "primary", "secondary", "current",
             "live", "local", "alt")
# (One pattern for every rule that reads a name: _name_kind, the suffixed-assignment and
# named-value rules.)
_VARIANT = rf"(?i:[_.-]?(?:\d{{1,3}}|v\d{{1,2}}|confirm(?:ation)?)|[_.-](?:{'|'.join(_VARIANTS)}))"
# (The same after its `_`, upper case: `API_KEY_2`, `DB_PASSWORD_PROD`.)
_UPPER_VARIANT = rf"(?:\d{{1,3}}|V\d{{1,2}}|CONFIRM(?:ATION)?|{'|'.join(v.upper() for v in _VARIANTS)})"
_VARIANT_SUFFIX = re.compile(rf"{_VARIANT}$")

_CHOSEN, _MADE, _WEAK, _BASIC, _SEED = "chosen", "made", "weak", "basic", "seed"
_API_PROVIDERS = frozenset(
    """openai anthropic claude groq mistral cohere gemini deepseek perplexity together fireworks replicate elevenlabs
    pinecone stripe sendgrid mailgun twilio algolia mapbox datadog newrelic openrouter voyage tavily serpapi""".split()
)
# Names whose value is `user:password`, plain or in base64: `basic_auth: "bob:pw"`, Yarn's
# `npmAuthIdent: "bob:pw"`, `http_auth`, `proxy_auth`, `userpass`.
_BASIC_TAILS = ("basicauth", "authident", "httpauth", "proxyauth", "userpass")
_HEADER_KEY = re.compile(r"(?:[A-Z][A-Za-z0-9]*-)+Key|(?:[A-Z][A-Z0-9]*-)+KEY")


def _normalize_name(name: str) -> str:
    return name.lower().translate(_NAME_SEPARATORS).strip("\"'\\ ")


@functools.lru_cache(maxsize=4096)  # dict keys repeat endlessly ("command", "stdout", ...)
def _name_kind(name: str) -> Optional[str]:
    """_CHOSEN (a password), _MADE (a token or key), _WEAK (only its `_KEY` suffix says so),
    _BASIC (`auth`: docker's config.json and .npmrc keep base64 `user:password` there), or None.

    The kind decides how much a value must look like a secret: anything under a password name,
    something machine-made-looking under the others (see `_plausible_secret`).
    """
    norm = _normalize_name(name)
    if norm in _NOT_SECRET_NAMES or "public" in norm:
        return None
    if norm in _CHOSEN_NAMES:
        return _CHOSEN
    bare = name.strip("\"'\\ ")
    if norm.endswith(_CHOSEN_TAILS) or _PASS_TAIL_UPPER.search(bare):
        return _CHOSEN
    if norm.endswith(_SEED_TAILS):
        return _SEED
    if norm.endswith(_MADE_TAILS):
        return _MADE
    if norm == "auth" or norm.endswith(_BASIC_TAILS):
        return _BASIC
    # Environment-variable style: an UPPER_CASE name ending in _KEY (STRIPE_KEY, SSH_KEY). Code
    # has many such constants too (CACHE_KEY = "user"), so these count only with a random-looking
    # value; lower-case `sort_key`, `cache_key`, `primary_key` never count.
    # WordPress's AUTH_SALT and friends likewise (a lower-case `salt = "v2-config"` is a constant).
    if (bare.endswith(("_KEY", "_SALT")) and bare.isupper()) or _PASS_TAIL.search(bare):
        return _WEAK
    # An API provider's key under its name in any case: `openai_key`, `anthropicKey`, `stripe_key`
    # (a lower-case `_key` names a sort key or a cache key elsewhere).
    if norm.endswith("key") and norm[:-3] in _API_PROVIDERS:
        return _MADE
    # An HTTP header's name in its own case, ending in Key: `DD-APPLICATION-KEY: x`,
    # `X-Client-Key: x`, `X-Shopify-Key`. (Lower-case `cache-key:` is a CI setting; a WebSocket
    # handshake's and an idempotency key are nonces, no secrets.)
    if _HEADER_KEY.fullmatch(bare) and not norm.startswith(("secwebsocket", "idempotency")):
        return _WEAK
    # A secret's name with a variant after it, as .env files and forms number and stage them:
    # DB_PASSWORD_PROD, API_KEY_2, STRIPE_SECRET_KEY_TEST, password2, password_confirmation.
    variant = _VARIANT_SUFFIX.search(bare)
    if variant and variant.start() > 0:
        return _name_kind(bare[: variant.start()])
    return None


def is_secret_name(name: str) -> bool:
    """Whether a variable, field or header name says its value is a secret.

    `OPENAI_API_KEY`, `db_password`, `clientSecret`, `X-Auth-Token`, `aws_secret_access_key`: yes.
    `PWD`, `sort_key`, `public_key`, `max_tokens`, `tokenizer`: no.
    """
    return _name_kind(name) is not None


_TOKEN_CHARS = re.compile(r"[A-Za-z0-9+/=_.~-]+")


def _decodes_to_credentials(value: str) -> bool:
    """Whether `value` is base64 of printable `user:password`, as under docker's and npm's `auth`."""
    if len(value) < 8 or not _BASE64_VALUE.fullmatch(value):
        return False
    try:
        raw = binascii.a2b_base64(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):  # (messages name no input; caught all the same)
        return False
    text = raw.decode("utf-8", errors="replace")
    return ":" in text and text.isprintable() and "\ufffd" not in text


_BASE64_VALUE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_PLAIN_CREDENTIALS = re.compile(r"[\w.@+-]{1,64}:(?![0-9]+\Z)[^\s:/\\]{4,200}")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_LETTER_DIGIT_SWITCH = re.compile(r"[A-Za-z](?=[0-9])|[0-9](?=[A-Za-z])")
_LOWER_UPPER = re.compile(r"[a-z](?=[A-Z])")


def _looks_random(value: str) -> bool:
    """Whether a value shaped like a name (`a.b.c`, `snake_case`, `camelCase`) is random text.

    Code references are identifiers made of words: `self.token`, `config.api_key`,
    `os.environ`, `getGithubTokenFromEnv`, `utf8_to_utf16`. Machine-made secrets are not, even
    when they happen to fit an identifier's characters. Random, here, is any of:
    - `eyJ` (base64 of `{"`): a JWT or another JSON-bearing token, `eyJhbGc.eyJzdWI.sig`;
    - three or more switches between letters and digits (`abc123.def456.ghi789`, `4f5e6d7c`);
      names have one or two (`sha256`, `x509_v3`, `config.db2`);
    - a run of 12+ letters whose case flips like random text: lower-to-upper at least once per
      six characters and 30% or more capitals (`AbCdEfGhIjKl`); camelCase words flip once per
      word and have fewer capitals (`thisIsAVeryLongName`: 4 flips, 26% capitals).
    An all-lower-case random run with no digits passes for a word: a limit of this test.
    """
    if "eyJ" in value:
        return True
    switches = 0
    for run in _ALNUM_RUN.findall(value):
        switches += len(_LETTER_DIGIT_SWITCH.findall(run))
        if len(run) >= 12:
            letters = sum(c.isalpha() for c in run)
            upper = sum(c.isupper() for c in run)
            if len(_LOWER_UPPER.findall(run)) * 6 >= len(run) and upper >= 0.3 * max(1, letters):
                return True
    return switches >= 3


def _looks_made(value: str) -> bool:
    """Whether a value looks machine-made: it has a digit, or it is long, of token characters,
    and its case is mixed like random text (aBcDeF...), not like words (RemoveImportsVisitor)."""
    if any(c.isdigit() for c in value):
        return True
    if len(value) < 16 or not _TOKEN_CHARS.fullmatch(value):
        return False
    letters = [c for c in value if c.isalpha()]
    upper = sum(c.isupper() for c in letters) / max(1, len(letters))
    return 0.25 <= upper <= 0.75


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------

# A replacer gets the text and a match over it; it returns what replaces the whole match, or
# None to keep the match as it is.
Replacer = Callable[[str, "re.Match[str]"], Optional[str]]


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: "re.Pattern[str]"
    replace: Replacer
    # Where the rule can match, found cheaply: (anchor, regex) pairs, where `anchor` is one
    # literal character that every match contains (mostly punctuation: `_` of `ghp_`, `-` of
    # `sk-`, `=` of an assignment) and `regex` looks around it. All rules' pairs make up a few
    # regexes, _GATES, one per anchor, that Python's engine scans for their anchor in C; a text
    # costs those few passes to learn which rules, if any, need to run.
    gates: tuple[tuple[str, str], ...]
    # The pattern starts at the anchor, so it is tried only where the gate matched rather than
    # over the whole text again (used by the rules whose gates fire often: `=` and `:`).
    anchored: bool = False


def _replace_group(text: str, m: "re.Match[str]", name: str, mark: str) -> str:
    """The matched text with group `name` swapped for `mark`."""
    start, end = m.span(name)
    return text[m.start() : start] + mark + text[end : m.end()]


def _whole(kind: str) -> Replacer:
    """The whole match is the secret."""
    mark = marker(kind)

    def replace(text: str, m: "re.Match[str]") -> Optional[str]:
        return None if _is_placeholder(m.group(0)) else mark

    return replace


def _group(kind: str, name: str = "s") -> Replacer:
    """Only group `name` is the secret; what the pattern matched around it stays."""
    mark = marker(kind)

    def replace(text: str, m: "re.Match[str]") -> Optional[str]:
        secret = m.group(name)
        if secret is None or _is_placeholder(secret):
            return None
        return _replace_group(text, m, name, mark)

    return replace


def _token(kind: str, prefix: str, rest: str, gate: tuple[str, str], left: str = "A-Za-z0-9_-") -> _Rule:
    """A provider token: a fixed-width prefix (a regex) and a body; the whole token goes.

    The left-boundary check sits after the prefix (a fixed-width lookbehind), so the pattern
    still starts with a literal that the engine can scan for. It also means a match can only
    start where a run of token characters starts, so `sk-sk-sk-...` costs one scan, not one per
    `sk-`.
    """
    # (An escaped newline or tab, `\\nghp_...` in a JSON dump, ends the text before it: its `n`
    # is no word character of the token's neighbour.)
    pattern = re.compile(
        f"{prefix}(?:(?:(?<![{left}]{prefix})|(?<=\\\\[nrt]{prefix})){rest}|(?<=[A-Za-z0-9][_-]{prefix}){_glued_body(rest)})"
    )
    return _Rule(kind, pattern, _whole(kind), (gate,))


# The longest body a token glued to a word is read for.
_GLUED_BODY = 256
# A quantifier with no upper bound, outside a character class: `{20,}`, `*`, `+`.
_UNBOUNDED = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]|\{(?P<least>[0-9]+),\}|(?P<op>[*+])")


def _glued_body(rest: str) -> str:
    """`rest` read for a token glued to a word by `_` or `-` (`backup_ghp_...`,
    `token-sk-ant-...`, a file named after it), with every unbounded repeat bounded to
    `_GLUED_BODY` characters. Such a token can start anywhere in a run of word characters, not
    only at its start, so a long run such as `x-sk-ant-sk-ant-...` is a candidate at every prefix:
    the bound keeps each candidate's work small, whatever the run's length. (The bound used to be
    on the run after the prefix, so a glued token with 256 characters or more after it, a long
    path or URL, stayed.)"""

    def bound(m: "re.Match[str]") -> str:
        if m.group("least") is not None:
            return f"{{{m.group('least')},{_GLUED_BODY}}}"
        if m.group("op"):
            return f"{{{0 if m.group('op') == '*' else 1},{_GLUED_BODY}}}"
        return m.group(0)

    return _UNBOUNDED.sub(bound, rest)


# --- private keys ---
# The body may hold real newlines, JSON-escaped `\n` (one or more backslashes), the quotes and
# commas of a string split over source lines, and `Proc-Type:`/`DEK-Info:` headers. It may not
# hold `(`, `)`, `;`, `{`, `}` or `[`, and must hold a base64 run, so PEM-parsing code that names
# both the BEGIN and END lines is not taken for a key. If the END line is missing (output cut
# short), the base64 lines after BEGIN go.
# (OpenVPN's tls-auth/tls-crypt key, `-----BEGIN OpenVPN Static key V1-----`, is hex, and as secret.)
_PK_LABEL = r"(?:[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?|OpenVPN Static key V1)"
_PK_NEWLINE = r"(?:\r?\n|(?:\\+r)?\\+n)"
# A 4096-bit RSA key is about 3,300 characters, a PGP key block with subkeys under 10,000. The
# body stops at the next `-----` and at this bound, so a BEGIN line with no END scans little.
_PK_MAX_BODY = 50_000
_PRIVATE_KEY = re.compile(
    rf"(?P<begin>-----BEGIN {_PK_LABEL}-----)"
    rf"(?:(?P<body>(?:[A-Za-z0-9+/=\s\\\"',:.]|-(?!----)){{0,{_PK_MAX_BODY}}}?)(?P<end>-----END {_PK_LABEL}-----)"
    # Cut short: whole lines of base64, each ending at a newline (real or escaped), a quote or the end.
    rf"|(?P<cut>(?:{_PK_NEWLINE}[A-Za-z0-9+/=]+(?={_PK_NEWLINE}|\\|[\"']|\Z))+))"
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}")
# Newlines, escaped or not, and the quotes of a string split over source lines; the trailing
# run is matched on the reversed body, so that neither search can go quadratic.
_LEADING_SPACE = re.compile(r"(?:\s|\\+[rnt]|\\?\")*")
_TRAILING_SPACE_REVERSED = re.compile(r"(?:\s|[rnt]\\+|\"\\?)*")
_PRIVATE_KEY_MARK = marker("private-key")


def _replace_private_key(text: str, m: "re.Match[str]") -> Optional[str]:
    begin, body = m.group("begin"), m.group("body")
    if body is None:
        cut = m.group("cut")
        if not _BASE64_RUN.search(cut):
            return None  # prose that mentions the BEGIN line
        return begin + _LEADING_SPACE.match(cut).group(0) + _PRIVATE_KEY_MARK
    if not _BASE64_RUN.search(body):
        return None  # code: markers = ["-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"]
    # Keep the line structure around the key material, whatever escaping it uses.
    lead = _LEADING_SPACE.match(body).group(0)
    trail_len = min(_TRAILING_SPACE_REVERSED.match(body[::-1]).end(), len(body) - len(lead))
    trail = body[len(body) - trail_len :]
    return begin + lead + _PRIVATE_KEY_MARK + trail + m.group("end")


# --- names followed by a separator: assignments and Authorization headers ---
# Between a name and its `=` or `:` there may be a closing quote, escaped in a JSON dump, the
# `]` of a subscript (`os.environ['API_KEY'] = ...`), and spaces: up to three of these characters.
# (And `?`/`|` of Make's `?=`, Ruby's `||=` and JavaScript's `??=`: `API_KEY ?= x`, `@token ||= "x"`.)
_GAP_CHARS = r"[\\\"' \t\]?|]"
_MAX_GAP = 3
# The ends of secret names (see `_name_kind`): `base` for SECRET_KEY_BASE, `auth` for docker's
# and npm's base64 `user:password`, `pass`/`pw` for DB_PASS and SMTP_PW.
_SECRET_WORDS = ("password", "passwd", "passphrase", "passcode", "pwd", "pass", "pw", "psk", "secret", "token", "key", "base", "auth", "salt",
                 "mnemonic", "phrase", "ident", "pat")
# A password's name in other languages (`_CHOSEN_TAILS`), before an `=`: `passwort=`, `mot_de_passe=`.
# (Before a colon they are labels, `Passwort: vergessen`, judged as prose by the foreign-password rule.)
# (ASCII only: a name is read back over ASCII name characters, so `contraseña=` is not one.)
_FOREIGN_SECRET_WORDS = ("passwort", "kennwort", "contrasena", "wachtwoord", "passe", "senha", "losenord", "passord",
                         "adgangskode", "salasana")


def _after(words: tuple[str, ...], sep: str) -> str:
    """A zero-width regex, placed right after a separator character, that holds when one of
    `words` (any case) ends just before it, give or take a gap."""
    # One look-behind per word length and gap: `(?<=(?:pass|auth|salt|base)=)` tries four words
    # with one fixed-width look, where a look per word would be tried four times.
    by_length: dict[int, list[str]] = {}
    for w in words:
        by_length.setdefault(len(w), []).append(w)
    looks = [
        f"(?<=(?:{'|'.join(group)}){_GAP_CHARS}{{{n}}}{sep})" if n else f"(?<=(?:{'|'.join(group)}){sep})"
        for group in by_length.values()
        for n in range(_MAX_GAP + 1)
    ]
    # `=` and `:` are common, so first a one-character test that fails for most of them
    # (`x = 1`, `a: b`) before the exact look-behinds run.
    ends = "".join(sorted({w[-1] for w in words} | {w[-1].upper() for w in words}))
    quick = "|".join(
        f"(?<=[{ends}]{_GAP_CHARS}{{{n}}}{sep})" if n else f"(?<=[{ends}]{sep})" for n in range(_MAX_GAP + 1)
    )
    return f"(?:{quick})(?i:" + "|".join(looks) + ")"


# NAME SEP VALUE, anchored on the separator, as rare in text as `=` and `:` are; the lookbehind
# holds when the name ends in a secret word, and `_replace_assignment` reads the whole name
# backwards and decides. A quoted value must close on its line, so an unclosed quote is never
# taken to run on into the code after it.
_VALUE = (
    # A YAML tag belongs to the document: `api_key: !!str 0123` (the tag was taken for the value,
    # and the value after it went out in clear).
    r"(?:!!(?:str|binary)[ \t]+)?"
    # So does a YAML anchor: `password: &db_pw Xy7Kp9q` (the anchor was read as the value, and
    # turned down as a name, and the password after it went out in clear).
    r"(?:&[A-Za-z_][\w-]{0,40}[ \t]+(?=[^\s#]))?"
    # A string prefix (f"...", b'...', r"...") belongs to the code, not the value.
    # (SQL's national strings too: `WITH PASSWORD = N'x'`.)
    # (Go's `[]byte("...")` is a conversion: `jwtKey := []byte("k")`.)
    # (So are a wrapper's or an owned string's: Rust's `password: String::from("pw")`,
    # `Some("pw".into())`, `SecretString::new("pw")`, pydantic's `SecretStr("pw")`, Java's
    # `new String("pw")`, C++'s `std::string("pw")`.)
    r"(?:[rRbBuUfF]{1,2}(?=[\"'])|N(?=')|\[\]byte\((?=[\"`])"
    r"|(?:(?:String::from|Some|Secret(?:Str|String|Box)?(?:::new)?|Zeroizing::new|new[ \t]+String|std::string)\([ \t]*){1,2}(?=[\"']))?"
    r"(?:"
    # (A JSON object in a string is no value but a document: its own names are judged, one by one:
    # `COMPOSER_AUTH='{"http-basic": {... "password": "x"}}'`. Read whole, it was turned down and
    # covered the names inside.)
    r"\"(?!\{[ \t]*\\*[\"'])(?P<dq>(?:[^\"\\\r\n]|\\[^\r\n])*)\""
    r"|'(?!\{[ \t]*\\*[\"'])(?P<sq>(?:[^'\\\r\n]|\\[^\r\n])*)'"
    r"|`(?P<bq>[^`\r\n]*)`"
    # An escaped quote (a JSON dump inside a string): the value ends at the next backslash.
    r"|\\+[\"'](?P<eq>[^\\\"'\r\n]*)\\+[\"']"
    # ODBC's braces, which quote a value that may hold `;`: `Pwd={p;w0rd}` (judged in
    # _replace_assignment: `{password}` is a template, `password={password}` a JSX prop).
    r"|\{(?P<br>[^{}\r\n\"'\\]{1,200})\}(?=[ \t]*(?:[;\"']|\r?\n|\\n|\Z))"
    # (An LDAP scheme may open it, `{SSHA}...`, `{CRYPT}$6$...`: see _HASH_SCHEME.)
    r"|(?P<uq>(?:\{[A-Za-z][A-Za-z0-9@_-]{1,30}\}(?=[^\s{}]))?(?:[^\s\"'`,;(){}\[\]<>&|\\]|\\(?![nrt\"'\\]))+)"
    r")"
)
# A quoted name, a comma and a quoted value: PHP's define('DB_PASSWORD', 'x'), Python's
# os.environ.setdefault("API_KEY", "x"), a ("password", "x") pair. The name's closing quote is
# right before the comma; `_replace_assignment` checks the rest.
_COMMA_LOOK = "(?<=[\"'],)(?i:" + "|".join(
    f"(?<=(?:{'|'.join(w for w in _SECRET_WORDS if len(w) == n)})[\"'],)" for n in sorted({len(w) for w in _SECRET_WORDS})
) + ")"
# A type annotation between the name and its `=`: TypeScript's `const apiKey: string = "x"`,
# Kotlin's and Swift's `val apiKey: String = "x"`, Python's `api_key: str = "x"`, Rust's `const
# API_KEY: &str = "x"`. Without it the value read was the type (a code word), and the literal after
# the `=` went out in clear. A space must come before that `=`, as every style guide writes it,
# so that base64 padding (`token: dXNlcj=`) is never read as a type and its `=`; a type with
# brackets or a union (`Optional[str] = None`, `str | None = None`) is not read as one either.
_TYPE_ANNOTATION = r"[ \t]*(?P<type>&?(?:'static[ \t]+)?[A-Za-z_][\w.]*\??)[ \t]+=(?![=>])"
# (A colon glued to `//` is a URL's scheme, `otpauth://totp/x?secret=K`, no separator: read as
# one, with `otpauth` no secret's name, its turned-down match covered the `secret=` inside.)
_ASSIGNMENT = re.compile(
    rf"(?:=(?P<eq_sep>{_after(_SECRET_WORDS + _FOREIGN_SECRET_WORDS, '=')})>?|:(?P<colon_sep>{_after(_SECRET_WORDS, ':')})(?!//)(?:{_TYPE_ANNOTATION}|=)?"
    rf"|,(?P<comma_sep>{_COMMA_LOOK}))"
    rf"(?![=>:])[ \t]*{_VALUE}"
)
_VALUE_GROUPS = ("dq", "sq", "bq", "eq", "br", "uq")
# A YAML local tag before the value: Ansible's `!vault |`, CloudFormation's `!Ref`/`!GetAtt`/`!Sub`,
# Home Assistant's `!secret NAME`. What follows names or encrypts the secret: it is not one.
_YAML_LOCAL_TAG = re.compile(r"![A-Za-z][\w.:-]*[ \t]+\S")
# The same from the separator on, with no look at the name: the suffixed-name rule below has
# read the name already. (`comma_sep` never matches: a ("NAME_2", "v") pair is left to the pair rules.)
_SEPARATOR_AND_VALUE = (
    rf"(?:=(?P<eq_sep>)>?|:(?P<colon_sep>)(?!//)(?:{_TYPE_ANNOTATION}|=)?|,(?P<comma_sep>(?!)))(?![=>:])[ \t]*{_VALUE}"
)
_ASSIGNMENT_AT_SEPARATOR = re.compile(_SEPARATOR_AND_VALUE)
# NAME VARIANT SEP VALUE: `DB_PASSWORD_PROD=x`, `API_KEY_2: x`, `password2 = "x"`. The assignment
# rule's look-behind reads the word right before the separator, so these names went unread. Found
# at the secret word (lower or capitalised, or PASSWORD) with the variant after it, or at the `_`
# between an upper-case secret word and its variant; `_name_kind` then reads the whole name.
_SUFFIXED_WORD_LOOK = rf"(?={_VARIANT}(?![\w-])[\"']?[ \t]*[=:])"
_SUFFIXED_UNDERSCORE_LOOK = (
    r"(?:(?<=TOKEN_)|(?<=SECRET_)|(?<=PASSWORD_)|(?<=PASSWD_)|(?<=PASS_)|(?<=KEY_))"
    rf"(?={_UPPER_VARIANT}(?![\w-])[\"']?[ \t]*[=:])"
)
_SUFFIXED_ANCHORS = ("password", "Password", "PASSWORD", "passwd", "pass", "secret", "Secret", "token", "Token", "key", "Key")
_SUFFIXED_ASSIGNMENT = re.compile(
    rf"(?:(?:{'|'.join(_SUFFIXED_ANCHORS)}){_SUFFIXED_WORD_LOOK}|_{_SUFFIXED_UNDERSCORE_LOOK})"
    rf"[\w.-]*?(?P<gap>[\"']?[ \t]*)(?=[=:]){_SEPARATOR_AND_VALUE}"
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
# After an unquoted value, these mean it was an expression: a call, an index, a generic, a block.
_CODE_FOLLOWERS = frozenset("([{<")
# A word after `token:`/`secret:` is prose ("uses a token: see RFC 6750"); machine-made
# secrets have digits or mixed case. People choose passwords, so password names get no such pass.
_PROSE_WORD = re.compile(r"[A-Za-z][a-z]*")
_MORE_WORDS = re.compile(r" +[A-Za-z]")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# snake_case, camelCase, PascalCase, SCREAMING_SNAKE, dotted.names: names of things, not secrets.
_CODE_NAME = re.compile(
    r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+|[a-z]+(?:[A-Z][a-z]+)+|(?:[A-Z]+[a-z]+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"
    r"|[a-z][a-z0-9]*(?:\.[a-z][A-Za-z0-9]*)+|[A-Za-z]+(?:\.[A-Za-z]+)+"
)
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}")
_HEX_LITERAL = re.compile(r"0[xX][0-9a-fA-F_]+[uUlL]*")
# (A default follows the `=`: base64 padding, `dWt2Y3l=`, ends the value instead.)
_ANNOTATION_DEFAULT = re.compile(r"[A-Za-z_][\w.\[\]]*=(?=[^=])")
# How far back on a line to count quotes; a longer line is taken to be data, not code.
_QUOTE_LOOKBACK = 2000
_ASSIGNMENT_MARK = marker("assignment")


def _name_start(text: str, end: int) -> int:
    """Where the name that ends at `end` begins."""
    i = end
    floor = max(0, end - 80)
    while i > floor and text[i - 1] in _NAME_CHARS:
        i -= 1
    # In JSON-escaped text a name follows `\n`: the `n` is the escape's, not the name's
    # (`\nPWD=` is PWD, not NPWD; `\nSTRIPE_KEY=` is upper case).
    if i < end - 1 and i > 0 and text[i - 1] == "\\" and text[i] in "nrt":
        i += 1
    return i


def _nested_literal(text: str, pos: int, group: str) -> bool:
    """Whether a quoted value inside a string literal is a literal of its own: quoted with the
    other quote (`'... password="pw";'`, Kafka's JAAS line in a YAML string, a libpq string in
    Python) or an escaped one (`\\"pw\\"` in a JSON string), so it cannot be the quote that closes
    the string around it (`getpass("Password: ")`)."""
    if group == "eq":
        return True
    floor = max(0, pos - _QUOTE_LOOKBACK)
    before = text[max(text.rfind("\n", floor, pos) + 1, floor) : pos]
    double_open, single_open = before.count('"') % 2 == 1, before.count("'") % 2 == 1
    return (group == "dq" and single_open and not double_open) or (group == "sq" and double_open and not single_open)


def _inside_string_literal(text: str, pos: int) -> bool:
    """Whether `pos` sits inside a "..." or '...' literal, judged by the quotes before it on its line.

    Catches `getpass("Password: ")` and `print("token: " + tok)`, where the quote after the
    colon closes the literal rather than opening a value.
    """
    floor = max(0, pos - _QUOTE_LOOKBACK)
    line_start = max(text.rfind("\n", floor, pos) + 1, floor)
    before = text[line_start:pos]
    return before.count('"') % 2 == 1 or before.count("'") % 2 == 1


def _line_prefix(text: str, pos: int) -> str:
    """What precedes `pos` on its line; a JSON-escaped `\\n` counts as a line break."""
    floor = max(0, pos - _QUOTE_LOOKBACK)
    # (rfind gives -1 when there is none: an escaped newline that is absent must not count as one
    # at offset 1, which cut the first character off `export NAME = value`.)
    escaped = text.rfind("\\n", floor, pos)
    start = max(text.rfind("\n", floor, pos) + 1, escaped + 2 if escaped >= 0 else 0, floor)
    return text[start:pos]


def _plausible_secret(kind: str, value: str) -> bool:
    """Whether a value under a secret name can be a secret at all, whatever surrounds it."""
    if _is_placeholder(value) or _HEX_COLOR.fullmatch(value):
        return False
    if kind == _SEED:
        return len(value.split()) >= 12
    if kind != _CHOSEN and _HEX_LITERAL.fullmatch(value) and len(value) <= 20:
        return False  # SEED_SALT = 0x9E3779B1: a constant in code (an Ethereum key, 0x + 64 hex, is no constant)
    if kind == _BASIC:
        # "auth": "required" is a setting; `bob:pw` in clear is the pair itself (not a path, a URL,
        # a host and port).
        return _decodes_to_credentials(value) or bool(_PLAIN_CREDENTIALS.fullmatch(value))
    if kind == _WEAK and not _looks_made(value):
        return False  # CACHE_KEY = "user", CONTEXT_KEY = "RemoveImportsVisitor"
    if kind != _CHOSEN and len(value) < 4:
        return False  # next_token = "a": machine-made secrets are long
    if value.isdigit() and (len(value) < 4 or (kind != _CHOSEN and len(value) < 8)):
        return False  # ERRORTOKEN = 58, token = 0, "HAVE_PASSWD": 1
    # A machine-made secret is not a name or a word: "input_token": "next_token",
    # SECRET_KEY = 'AWS_SECRET_ACCESS_KEY', "output_token": "marker"; unless the "name" is random
    # text that fits a name's shape (session_token: abc123.def456.ghi789).
    if kind != _CHOSEN and (_CODE_NAME.fullmatch(value) or _PROSE_WORD.fullmatch(value) or _DOTTED_REF.fullmatch(value)):
        if kind == _MADE and value.count(".") >= 2 and _DOTTED_REF.fullmatch(value) and not _reads_as_reference(value):
            return True  # session_token: aaa.bbb.ccc (the `:` case is judged again where code is told apart)
        return _looks_random(value)
    return True


# Where code's references to secrets start: `token: this.props.token`, `password: req.body.password`.
_CODE_ROOTS = frozenset(
    """
    self this cls super os sys process env environ config conf cfg settings options opts args kwargs params
    props state store ctx context request req res response session app window document global globals
    module exports secrets vault credentials creds auth client user data payload body obj item record
    row result values np torch typing t
    """.split()
)


def _reads_as_reference(value: str) -> bool:
    """Whether a dotted value of three or more parts after a colon reads as code rather than as a
    YAML value: it starts at an object code reaches into (`process.env.API_KEY`), its last part
    names a secret (`ctx.user.session_token`), or it is named like code (a capital or an
    underscore). Otherwise `session_token: aaa.bbb.ccc` is data."""
    parts = value.split(".")
    if parts[0] in _CODE_ROOTS or _name_kind(parts[-1]) is not None:
        return True
    # A capital or an underscore in a part is code's naming (`SpecialTokens.bos.value`,
    # `torch.nn.Module`, `cfg_loader.db.pwd_file`); random ones were ruled out before.
    return any(c.isupper() or c == "_" for c in value)


_VIM_SCOPED = re.compile(r"[abglstvw]:(?:\d{1,2}|[A-Za-z_][\w#]{0,60})")

# A config line's unquoted value runs to the first space: `.env`'s `DB_PASSWORD=Xy7&Kp9q`, YAML's
# `password: Ab12,Cd34`. The value pattern stops at shell and code punctuation (`& | ; , ( ) [ ] {
# } < >`), so a generated password's tail after such a character stayed in clear
# (`[REDACTED]&Kp9q`), or the whole of it was read as code (`Xy7(Kp9q`, `Xy7<Kp9q`). The run ends
# at whitespace, at a double quote, and at an escaped break (`\n`: a JSON string's, a transcript's
# line); an escaped quote is part of it (`Some(String::from(\"x\"))` in a JSON string is one call).
_RUN_CHAR = r"(?:[^\s\\\"]|\\(?![nrt\\]))"
# (Bounded: no secret is longer, and a line of `NAME=x<br>` repeated would read to its end each time.)
_MAX_RUN = 256
_VALUE_RUN = re.compile(_RUN_CHAR + f"{{1,{_MAX_RUN}}}")
# After the cut, another setting begins: a connection string's `;AccountKey=x;EndpointSuffix=y`, a
# query's `&x=1`, a list's `,b=2`. The value ends at the cut.
_NEXT_SETTING = re.compile(r"[;&,|][ \t]*[A-Za-z_][\w.-]*[ \t]*=")
_CLOSING_BRACKETS = {")": "(", "]": "[", "}": "{", ">": "<"}


def _before_next_setting(run: str) -> str:
    """A run up to another setting after a later cut: `Password=Xy7&Kp9q;Encrypt=true` ends
    before `;Encrypt=`, as it would at the first cut."""
    after = _NEXT_SETTING.search(run, 1)
    return run if after is None else run[: after.start()]
# Code in one word: a call, an index, a generic or a block, or a chain of them (`get_token()`,
# `keys[0]`, `Vec<u8>`, `os.environ["X"]`, `Optional[str]`, `{}`), brackets balanced.
_CODE_IN_ONE_WORD = re.compile(
    r"[A-Za-z_][\w.]*[(\[<{].*[)\]>}](?:\.[A-Za-z_][\w.]*|\(\S*\)|\[\S*\])*[;,]?|\{\}|\[\]|\(\)"
)


# A function's or a type's name before a bracket: words, dots, a number at the end (`crypt`,
# `hashlib.sha256`, `md5`, `Vec`); a password's head (`qT5fKS(WaL33S`) mixes digits in.
_CALLED_NAME = re.compile(r"[A-Za-z_][A-Za-z_.]+[0-9]*")


# A `$` that reads as a reference or a substitution in a value: `$(...)`, `${...}`, `$HOME`,
# `$db_pass`. A password's `$` is followed by other text (`Xy7|$e5Wc!M`, `$3pAAk`).
_SHELL_REFERENCE = re.compile(r"\$(?:[({]|[A-Z_][A-Z_]*(?![\w])|[a-z_][a-z_]*(?![\w]))")


def _brackets_balance(run: str) -> bool:
    stack: list[str] = []
    for c in run:
        if c in "([{<":
            stack.append(c)
        elif c in _CLOSING_BRACKETS:
            if not stack or stack.pop() != _CLOSING_BRACKETS[c]:
                return False
    return not stack


def _config_run_is_literal(text: str, value_start: int, value_end: int, name_start: int, kind: Optional[str] = None) -> bool:
    """Whether an unquoted value that punctuation cut short on a config line (the name opens its
    line) is one literal to the end of its run of non-space characters: more letters or digits
    follow the cut, and the run is not code (`token=get_token()`, `password: Optional[str]`,
    `TOKEN=$(gh auth token)`, a template's `{x}`)."""
    run = _VALUE_RUN.match(text, value_start)
    if run is None or run.end() <= value_end or not any(c.isalnum() for c in text[value_end : run.end()]):
        return False
    if run.end() - value_start >= _MAX_RUN or _NEXT_SETTING.match(text, value_end):
        return False
    whole = _before_next_setting(run.group(0))
    # (A lone backtick or a `$` before other text, `E(ByA5`qAR`, `7PG7|$e5Wc!M`, is the password's.)
    if _SHELL_REFERENCE.search(whole) or whole.count("`") >= 2 or (_brackets_balance(whole) and _CODE_IN_ONE_WORD.fullmatch(whole)):
        return False
    if _TAG_AT.match(text, value_end) and _tag_is_markup(text, value_end):
        return False  # `password=x</td>`, `DB_PASS=x<br>`: markup after the value
    if _CONFIG_LINE_START.fullmatch(_line_prefix(text, name_start)):
        return True
    # Elsewhere on a line code is near (`f(token=tok1,user)`), so the run must look random as a
    # whole, its closing punctuation aside: "the key passphrase: qT5fKS,WaL33S", a connection
    # string's `Password=Xy7(Kp9qZ3;`. (Its cut part alone read as code, or was too short.)
    body = whole.rstrip(_SENTENCE_END)
    if text[value_end] in "([{<" and _CALLED_NAME.fullmatch(text, value_start, value_end):
        return False  # `password = crypt('Xy7Kp9q', gen_salt('bf'))`: a call, its arguments other rules'
    if _looks_random(body):
        return True
    # A password's (people choose those: "the root password: x,QE6YqzSLW") with a digit in it,
    # unless what follows the cut is a name, as code's next argument is (`f(password=pw1,user)`).
    after = body[value_end - value_start :].lstrip(_SENTENCE_END + "&|<>([{")
    return (kind == _CHOSEN and any(c.isdigit() for c in body) and after != ""
            and not (_CODE_NAME.fullmatch(after) or _PROSE_WORD.fullmatch(after) or _IDENTIFIER.fullmatch(after) and not _looks_made(after)))


_TAG_AT = re.compile(r"</?([A-Za-z][\w:-]*)(?:[ \t][^<>\r\n]{0,200})?/?>")
_VOID_NAMES = frozenset("br hr img input meta link wbr area base col embed source track".split())


def _tag_is_markup(text: str, at: int) -> bool:
    """A closing tag, an HTML element's opening tag (HTML leaves `</p>`, `</li>`, `</td>` out at
    will: `DB_PASS=x<br>`, `x<p>next`), or another tag whose closing tag follows: markup. Any other
    (`Xy7<Kp9q`, `Zq8<9xY>Lm2`) is the value's own text. (A password holding an element's tag,
    `x9<b>Qz7`, is cut at it: a known limit.)"""
    tag = _TAG_AT.match(text, at)
    name = tag.group(1)
    return (text.startswith("</", at) or name.lower() in _VOID_NAMES or bool(re.fullmatch(_HTML_ELEMENTS, name))
            or text.find(f"</{name}>", tag.end(), tag.end() + 4096) >= 0)


def _unquoted_reads_as_code(text: str, m: "re.Match[str]", name: str, name_start: int, kind: str, spaced: bool,
                            config_run: bool = False) -> bool:
    """Whether an unquoted value is an expression or a reference rather than a literal
    (`config_run`: `_config_run_is_literal` said it runs on past its cut as one literal)."""
    value = m.group("uq")
    if _VIM_SCOPED.fullmatch(value):
        return True  # Vim script's `let g:netrw_passwd=a:2`: a function's argument, a scoped variable
    if config_run:
        return False  # `DB_PASSWORD=Xy7(Kp9q`: its tail goes too (_replace_assignment_tail)
    # A name that is random text is a literal, wherever it stands: `session_token: eyJx.y.z`,
    # `token = abc123.def456.ghi789`, `echo aws_secret_access_key = AbC...` (see `_looks_random`).
    random = _looks_random(value)
    if _DOTTED_REF.fullmatch(value) and not random:
        colon = m.start("colon_sep") >= 0
        # (On a config line a password's name with a dotted value mixing case and digits is a
        # password with a dot, `password: mRcyBM8emGY.XAF`: no config file writes code there.)
        prefix = _line_prefix(text, name_start)
        generated = (kind == _CHOSEN and _dotted_password(value)
                     and bool(_CONFIG_LINE_START.fullmatch(prefix.lstrip(" \t") if colon else prefix)))
        if not (colon and value.count(".") >= 2 and not _reads_as_reference(value)) and not generated:
            return True  # token = self.token, key: process.env.API_KEY, api_key=config.api_key
    nxt = text[m.end()] if m.end() < len(text) else ""
    if nxt and nxt in _CODE_FOLLOWERS and not random:
        return True  # token = get_token(), password: Optional[str] (no code is named `WFTD4vMdETBr(`)
    if nxt == "}" and name_start > 0 and text[name_start - 1] == "{":
        return True  # a format field: f"{token:02x}"
    colon = m.start("colon_sep") >= 0 and text[m.end("colon_sep") : m.end("colon_sep") + 1] != "="
    if colon and _ANNOTATION_DEFAULT.match(value) and not _CONFIG_LINE_START.fullmatch(_line_prefix(text, name_start)):
        return True  # def f(startToken:Token=None); YAML's `password: Xy7=Kp9q` is a value
    if colon and _PROSE_WORD.fullmatch(value) and (kind != _CHOSEN or _MORE_WORDS.match(text, m.end())):
        return True  # "uses a token: see RFC 6750", "password: The plaintext password."
    if random or not _IDENTIFIER.fullmatch(value):
        return False
    # From here the value is a bare name: a variable, or a password/token written bare.
    if nxt and nxt in ",)}" and not (nxt != "," and _closes_nothing(text, m, name_start)):
        return True  # f(token=tok, ...), {"nextToken": next_token}
    if kind != _CHOSEN and not _looks_made(value):
        return True  # Token = Ignore + PlainToken; tokens have digits
    if kind == _CHOSEN and "_" in value and not any(c.isdigit() for c in value):
        return True  # password=user_password
    # `name = other` is code when the name does not start its line (indented, `a, b = ...`)
    # or is an attribute; a config line (`password = hunter2` in .pypirc, `export DB_PASSWORD =
    # hunter2`, `$ PASSWORD = x`) starts its line, give or take a prompt and `export`.
    return spaced and (not _CONFIG_LINE_START.fullmatch(_line_prefix(text, name_start)) or "." in name)


# Closing brackets, then the line's end.
_CLOSERS_TO_LINE_END = re.compile(r"[)\]}]+[ \t]*(?:\r?\n|\\n|\Z)")


def _closes_nothing(text: str, m: "re.Match[str]", name_start: int) -> bool:
    """Whether the closing brackets after a bare value end a config line that opened none: YAML's
    `password: RC9VPYMAXaFg)` (indented too) or `.env`'s `DB_PASSWORD=Xy7Kp9q}` at the line's
    start. There the bracket is the password's last character, not the end of a call
    (`f(token=tok)`; an `=` argument on an indented line of a call, `    password=pw1)`, stays)."""
    if not _CLOSERS_TO_LINE_END.match(text, m.end()):
        return False
    prefix = _line_prefix(text, name_start)
    if _CONFIG_LINE_START.fullmatch(prefix):
        return True
    # Indented (YAML's nesting, but also an object literal's last line in code, `  password: pw1})`):
    # a colon's value, that mixes case and digits as no variable's name does.
    value = m.group("uq")
    return (m.start("colon_sep") >= 0 and bool(_CONFIG_LINE_START.fullmatch(prefix.lstrip(" \t")))
            and (_looks_random(value) or (any(c.isdigit() for c in value) and any(c.isupper() for c in value) and any(c.islower() for c in value))))


# A code path's head: a lower-case word (`self`, `config`, `settings`, `os`) or a known root.
_PATH_HEAD = re.compile(r"[a-z]{2,}|[A-Z][a-z]+|_*[a-z][a-z_]*")


def _dotted_password(value: str) -> bool:
    """A dotted value that is a password with a dot in it, not an attribute's path: it mixes case
    and digits (`mRcyBM8emGY.XAF`, `HL7QRFkdDDVP.kM`) and opens with no word that a path opens
    with (`config.dbPassword2`, `self.db.Password1`, `Settings.DbPass2` stay)."""
    head = value.split(".", 1)[0]
    return _mixes_case_and_digits(value) and not _PATH_HEAD.fullmatch(head) and head not in _CODE_ROOTS


# What may precede NAME on a config line: indentation-free prompts, comment marks and the
# shell's export/set keywords (and PowerShell's `$env:`).
_CONFIG_LINE_START = re.compile(r"(?:[$#>%*;/-]+[ \t]*)?(?:(?:export|set|setx|setenv|declare -x|ENV)[ \t]+)?(?:\$env:)?")


_YAML_ALIAS = re.compile(r"\*([A-Za-z_][\w-]{0,60})")


def _yaml_alias(text: str, value: str, at: int) -> bool:
    """Whether a value is a YAML alias (`*db_pw`): one whose anchor (`&db_pw`) the text sets
    before it, or whose name reads as a name, not as a generated password (`*Xy7Kp9q` goes)."""
    alias = _YAML_ALIAS.fullmatch(value)
    if alias is None:
        return False
    name = alias.group(1)
    return ("&" + name) in text[max(0, at - 20_000) : at] or not (_looks_random(name) or _mixes_case_and_digits(name))


def _replace_assignment(text: str, m: "re.Match[str]") -> Optional[str]:
    # Back over the gap to the end of the name: spaces, then the quote closing a quoted name.
    i = m.start()
    while i > 0 and text[i - 1] in "?|" and m.start() - i < 2:
        i -= 1  # Make's `API_KEY ?= x`, Ruby's `@token ||= "x"`, JavaScript's `token ??= "x"`
    spaced = i > 0 and text[i - 1] in " \t"
    while i > 0 and text[i - 1] in " \t":
        i -= 1
    if i > 0 and text[i - 1] == "]":
        i -= 1  # os.environ['API_KEY'] = 'x', ENV["TOKEN"] = "x"
    quoted_name = i > 0 and text[i - 1] in "\"'"
    while i > 0 and text[i - 1] in "\"'\\":
        i -= 1
    name_start = _name_start(text, i)
    if (
        name_start > 0
        and text[name_start - 1] == ":"
        and not _COLON_NAME_PREFIX.search(text[max(0, name_start - 6) : name_start])
        and not (name_start == 1 or text[name_start - 2] in _SYMBOL_OPENERS)
    ):
        return None  # the tail of a colon path: arn:aws:secretsmanager:...:secret:name, "AWS::X::Secret"
    name = text[name_start:i]
    if text[max(0, name_start - 2) : name_start] == "${":
        return None  # `${DB_PASSWORD:?must be set}`: a reference; its default is _VAR_DEFAULT's
    group = next(g for g in _VALUE_GROUPS if m.start(g) >= 0)
    kind = _name_kind(name) or _connection_string_pwd(text, m, name, name_start)
    if kind is None and name == "key" and _USER_BESIDE.search(text[max(0, name_start - 120) : name_start]):
        kind = _MADE  # kaggle.json's {"username": "bob", "key": "<32 hex>"}: a user's API key
    if kind in (None, _BASIC) and name in ("key", "auth", "sig") and m.start("eq_sep") >= 0 and text[name_start - 1 : name_start] in ("?", "&"):
        kind = _MADE  # a URL's query: `https://api.example.com/v1/x?key=<api key>`, `?auth=<token>`
    if kind == _BASIC and name == "auth" and _TOKEN_CLIENT_BEFORE.search(text, max(0, name_start - 120), name_start):
        kind = _MADE  # `new Octokit({ auth: "T" })`, Notion's `new Client({ auth: "T" })`: a client's token
    if kind is None and name.lower() in ("pass", "pw") and _user_field_before(text, name_start):
        kind = _CHOSEN  # "user: admin, pass: PW", "username=bob pw=PW": a user's field right before it
    if kind is None and name == "pass" and m.start("colon_sep") >= 0 and group in ("dq", "sq"):
        kind = _CHOSEN  # nodemailer's and ftp clients' `auth: {user: 'x', pass: 'pw'}`
    elif kind is None and name == "pass" and group == "uq":
        # A config file's `pass = x` line: rclone.conf's (obscured, and reversible: `rclone
        # reveal`), an INI's or a YAML mapping's. `pass` opening a line is a password there;
        # indented (`  pass: x`, or code's `  pass = x`) only with a made-looking value; after
        # other words on its line never ("# First pass: mask==0").
        line = _line_prefix(text, name_start)
        kind = _CHOSEN if _CONFIG_LINE_START.fullmatch(line) else _WEAK if not line.strip() else None
        if kind is None:
            return None
    if kind is None:
        return None
    value = m.group(group)
    # (Not a URL's query parameter: `otpauth://totp/x?secret=K`'s `/x?` labels no pair.)
    if "/" in text[max(0, name_start - 3) : name_start] and text[name_start - 1 : name_start] not in ("?", "&") and _SLASH_LABEL_BEFORE.search(text, max(0, name_start - 30), name_start + len(name)):
        paired = _replace_labelled_pair(text, m, kind, group, name_start + len(name))
        if paired is not _NOT_A_PAIR:
            return paired  # "username/password: root/PW": the user stays
    if group == "uq" and (_YAML_LOCAL_TAG.match(text, m.start(group)) or value.startswith("!!")):
        return None  # `password: !vault |`, `MasterUserPassword: !Ref DbPassword`, `!secret wifi_pw`: a tag and a reference
    if group == "uq" and m.start("colon_sep") >= 0 and (value == "~" or _yaml_alias(text, value, m.start(group))):
        return None  # YAML's null (`password: ~`) and an alias of an anchored value (`password: *db_pw`): no secret here
    if group == "br" and not _looks_random(value) and (_CODE_NAME.fullmatch(value) or _IDENTIFIER.fullmatch(value) or _DOTTED_REF.fullmatch(value) or any(c in value for c in "()[]:!")):
        return None  # f"PWD={password}", {db.password}, {pw!r}, {x:>8}: a template or code; `Pwd={p;w0rd}` is ODBC's quoting
    if m.start("type") >= 0 and group == "uq" and not _looks_random(value):
        return None  # api_key: str = default_key, password: String = pw: after a type, a bare word is code
    if m.start("comma_sep") >= 0 and not (
        quoted_name
        # WeightRenaming("a.cls_token", "b.token"): paths, not a setting; but a dotted property's
        # name with a literal is one: System.setProperty("javax.net.ssl.keyStorePassword", "x"),
        # props.setProperty("mail.smtp.password", "x"), viper.Set("db.password", "x").
        and ("." not in name or "." not in value or _looks_random(value))
        and group in ("dq", "sq")
        and _PAIR_OPENER.search(text[max(0, name_start - _PAIR_LOOKBACK) : name_start])
        and _PAIR_CLOSER.match(text, m.end())
    ):
        return None  # f(token, "x"), ["password", "x", "y"]: a comma is an assignment only in ("NAME", "value")
    if m.start("comma_sep") >= 0 and value in ("User", "Machine", "Process"):
        return None  # [Environment]::GetEnvironmentVariable("DB_PASSWORD", "User"): a scope
    config_run = group == "uq" and _config_run_is_literal(text, m.start(group), m.end(group), name_start, kind)
    if config_run:
        value = _before_next_setting(_VALUE_RUN.match(text, m.start(group)).group(0))  # judged whole: `API_KEY=Zq8<9xY>Lm2`
    if not _plausible_secret(kind, value):
        return None
    if _normalize_name(value) in (_normalize_name(name), _normalize_name(name.rsplit(".", 1)[-1])):
        return None  # f(password=password), {"token": token}, self.token = token
    if group == "uq":
        if _unquoted_reads_as_code(text, m, name, name_start, kind, spaced, config_run):
            return None
    elif not quoted_name and _inside_string_literal(text, name_start) and not _nested_literal(text, name_start, group):
        return None  # getpass("Password: ")
    scheme = _HASH_SCHEME.fullmatch(value)
    if scheme:
        if _normalize_name(name) in _LDIF_ATTRIBUTES:
            return None  # LDIF's own rule marks it an [ldap-password]
        # {SSHA}<hash>: the scheme stays, as a crypt hash's does.
        start = m.start(group) + scheme.start("rest")
        return text[m.start() : start] + _ASSIGNMENT_MARK + text[m.end(group) : m.end()]
    return _replace_group(text, m, group, _ASSIGNMENT_MARK)


_LDIF_ATTRIBUTES = frozenset({"userpassword", "olcrootpw", "sambantpassword", "sambalmpassword"})
# A labelled pair within one value: `root/PW`, `root:PW`; _NOT_A_PAIR, a value that is none.
_PAIR_VALUE = re.compile(r"[\w@.+-]{1,64}[ \t]*[/:][ \t]*(?P<s>[^\s/`'\"\\][^\s`'\"\\]*)")
_NOT_A_PAIR = "\0"


def _replace_labelled_pair(text: str, m: "re.Match[str]", kind: str, group: str, name_end: int) -> Optional[str]:
    """`password` after `user/` names a pair's second half: "username/password: root/PW",
    "login/pw = bob/PW". The slash-label rule, later, takes the colon's pair (keeping the user,
    and `admin / PW` whole, where this match ends at `admin`); a pair within the value loses its
    password only; _NOT_A_PAIR for a value that is no pair, read as the assignment it is."""
    colon = text.find(":", name_end, m.start(group))
    pair = _SLASH_LABEL_PAIR.match(text, colon) if colon >= 0 else None
    if pair is not None and _replace_slash_label_pair(text, pair) is not None:
        return None
    if pair is not None and not pair.group("between").strip():
        if pair.group("s").startswith(_MARKER_OPEN):
            return None  # "user/password: admin [REDACTED:prose-secret]": the pair's password gone already
        if _is_placeholder(pair.group("s").rstrip(".,;:!?)")):
            return None  # "user/password: admin <password>", "admin $PASS": a user, then a placeholder for its password
        pair = None  # "user/password: Zq8vLm2pXw (rotated)": two words, no pair; the value judged as before
    inner = _PAIR_VALUE.fullmatch(m.group(group))
    if inner is None:
        return None if pair is not None else _NOT_A_PAIR  # (`admin / x`: this match ends at the user)
    if not _plausible_secret(kind, inner.group("s")):
        return None
    start = m.start(group) + inner.start("s")
    return text[m.start() : start] + _ASSIGNMENT_MARK + text[start + len(inner.group("s")) : m.end()]


_UID_BEFORE = re.compile(r"[\"']?(?i:uid|user ?id)[\"']?[ \t]*(?:=>|[:=])[ \t]*[\"']?[\w.@\\-]{1,64}[\"']?[ \t]*[,;]")


def _connection_string_pwd(text: str, m: "re.Match[str]", name: str, name_start: int) -> Optional[str]:
    """_CHOSEN for `Pwd=` after a `;`: a connection string's password (ODBC, ADO.NET, MySQL
    Connector: `Server=db;Uid=sa;Pwd=x`), and for a lower-case `pwd:` with a quoted value:
    MongoDB's `db.createUser({user: "bob", pwd: "x", roles: []})` (mongo-init.js). Elsewhere PWD
    is the shell's working directory, and so is a value that is a path (`cd /srv; PWD=/srv
    make`, `{"pwd": "/home/dev"}`)."""
    if _normalize_name(name) != "pwd":
        return None
    group = next(g for g in _VALUE_GROUPS if m.start(g) >= 0)
    value = m.group(group)
    if value.startswith(("/", "~")):
        return None
    if text[max(0, name_start - 8) : name_start].rstrip(" \t").endswith(";"):
        return _CHOSEN
    if _UID_BEFORE.search(text, max(0, name_start - 200), name_start):
        return _CHOSEN  # PHP's sqlsrv_connect($s, array("UID" => "sa", "PWD" => "x")): a user's field before it
    quoted_after_colon = name == "pwd" and m.start("colon_sep") >= 0 and group in ("dq", "sq")
    return _CHOSEN if quoted_after_colon and "/" not in value and "\\" not in value else None


# A connection string's password (`Server=db;User Id=bob;Password=8 6UX4LShGW;`): in `key=value;`
# text a value runs to its `;`, spaces and quotes and brackets inside it included. The assignment
# rule reads an unquoted value to its first space or punctuation, and the part after stayed in
# clear (`Password=[REDACTED] 6UX4LShGW;`), or the whole when its head was too short to judge.
# Found after a `;` (the string's earlier setting) and taken over from the assignment rule only
# for a value such a cut would leave incomplete. A JSON string's closing quote, an escaped break
# or a line's end also ends it; a quote before a space, `+`, `&` or `;` closes code's string
# (`"...;Password=" + pw + ";"`, `'...;Password=x';`).
_CONN_STRING_PASSWORD = re.compile(
    r"=(?:(?<=;password=)|(?<=;pwd=)|(?<=; password=)|(?<=; pwd=))[ \t]*"
    r"(?P<s>(?:[^;\r\n\"'\\]|[\"'](?=[^\s,}\]:+&;])|\\(?![nrt\"\\])){1,200}?)[ \t]*(?=;|\\\"|\"[ \t]*(?:[,}\]:]|\Z)|\\[nr]|\r?\n|\Z)",
    re.IGNORECASE,
)
_CONN_STRING_LOOK = r"(?i:(?<=;password=)|(?<=;pwd=)|(?<=; password=)|(?<=; pwd=))"
_CONN_STRING_BEFORE = re.compile(r"=[^;=\r\n]{0,200};[ \t]*[A-Za-z]{3,8}[ \t]*=\Z")
# (A dot too: `Password=egFMYTF4.dt;` read as an attribute's path, code, stayed whole.)
_CONN_STRING_CUT = re.compile(r"[\s\"'`,;(){}\[\]<>&|\\.]")


def _replace_conn_string_password(text: str, m: "re.Match[str]") -> Optional[str]:
    value = m.group("s")
    if not _CONN_STRING_CUT.search(value.lstrip()):
        return None  # one word: the assignment rule's, as it always was
    if not (text.startswith(";", m.end()) or _CONN_STRING_BEFORE.search(text, max(0, m.start() - 220), m.start() + 1)):
        return None  # a `;` then "password=x y" with no setting before it and none after: not a connection string
    body = value.strip()
    if (len(body) < 3 or _is_placeholder(body) or _TEMPLATE_FIELD.fullmatch(body) or body.startswith(("$", "%", "{", "<"))
            or _MARKER_OPEN in body):
        return None  # `Password={password};`, `Pwd=$(DB_PW);`, `Password=<your password>;`, `Password=%PW%;`
    if not any(c.isalnum() for c in body):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# An API client's options object, opened right before an `auth:` field: its token.
_TOKEN_CLIENT_BEFORE = re.compile(r"(?:Octokit|Client|Gitlab|Replicate|Api|API|SDK|Sdk)\([ \t]*\{[^{}()]{0,100}\Z")
# "user: admin, pass: PW", "username=bob pw=PW": `pass` or `pw` alone names a password where a user's
# field comes right before it on its line (alone, `pass:` is a compiler's or a test's pass: "# First
# pass:", "pass: 12").
_USER_FIELD_BEFORE = re.compile(r"(?:\b(?i:user(?:name)?|login))[ \t]*[:=][ \t]*[\"']?[\w@.+-]{1,64}[\"']?[ \t]*[,;|]?[ \t]+\Z")
# (The field ends where `pass` starts: only the line's last characters are searched, not all of
# its 2,000 (_QUOTE_LOOKBACK) from every `pass:` of a line of them: 2.5 s for "user/pass: " * 20,000.)
_USER_FIELD_REACH = 200


def _user_field_before(text: str, name_start: int) -> bool:
    line = _line_prefix(text, name_start)
    return _USER_FIELD_BEFORE.search(line, max(0, len(line) - _USER_FIELD_REACH)) is not None
# `"username": "x", "key"` in one object: the key is the user's (kaggle.json, API client configs).
_USER_BESIDE = re.compile(r"[\"']?user(?:name)?[\"']?[ \t]*[:=][ \t]*[\"']?[\w.@+-]{1,64}[\"']?[ \t]*[,;\r\n][^{}\[\]]{0,40}\Z")


# A colon before a name ends a path (`arn:...:secret:x`), except the two that end a prefix:
# .npmrc's `//registry.npmjs.org/:_auth=` and PowerShell's `$env:DB_PASSWORD = `, and a colon
# that opens a Ruby symbol, after a space, a bracket, a comma or at a line's start: `{ :password
# => 'x' }`, RubyGems' ~/.gem/credentials `:rubygems_api_key: x`, Sidekiq's `:password: x`.
# (And Vim script's scopes: `let g:openai_api_key = "k"`, `b:`, `w:`, `t:`, `s:`, `l:`.)
_COLON_NAME_PREFIX = re.compile(r"(?:/|\$(?i:env)|(?<![\w:#.$-])[gbwtsl]):\Z")
_SYMBOL_OPENERS = frozenset(" \t\r\n{([,")
# ("NAME", "value"): a call or tuple of exactly these two, `(` before the name's opening quote
# and `)` after the value; a longer list of names ('user', 'password', 'host') is not a pair.
# Setters' extra arguments count as none: configparser's section before the name
# (`config.set('db', 'password', 'x')`), C's overwrite flag and .NET's scope after the value
# (`setenv("DB_PASSWORD", "x", 1)`, `SetEnvironmentVariable("API_KEY", "x", "User")`).
_PAIR_OPENER = re.compile(r"(?:\(|\.set\([ \t]*[\"'][^\"'\r\n]{1,40}[\"'][ \t]*,)[ \t]*[\"']\Z")
_PAIR_CLOSER = re.compile(
    r"[ \t]*(?:,[ \t]*(?:\d{1,2}|true|false|True|False|TRUE|FALSE|[\"'](?:User|Machine|Process)[\"']|EnvironmentVariableTarget\.\w+)[ \t]*)?\)"
)
_PAIR_LOOKBACK = 64


# What the assignment rule left after its marker on a config line: `[REDACTED:assignment]&Kp9q`.
_ASSIGNMENT_TAIL = re.compile(r"\](?<=\[REDACTED:assignment\])(?!\[REDACTED:)(?P<tail>[^\s\\\"\w$:.!?]" + _RUN_CHAR + f"{{0,{_MAX_RUN}}})")
_SEPARATOR_BEFORE_MARKER = re.compile(r"(?<=[\w.-])[\"']?[ \t]*(?:=|:)[ \t]*\Z")


def _replace_assignment_tail(text: str, m: "re.Match[str]") -> Optional[str]:
    """Drop the rest of a config line's value after the assignment rule's marker: the run of
    non-space characters that `_config_run_is_literal` judged one value with it (the same tests,
    but for code in one word: a value read as code left no marker)."""
    marker_start = m.start() + 1 - len(_ASSIGNMENT_MARK)
    separator = _SEPARATOR_BEFORE_MARKER.search(text, max(0, marker_start - 16), marker_start)
    if separator is None:
        return None
    name_start = _name_start(text, separator.start())
    tail_start = m.start("tail")
    tail = _before_next_setting(m.group("tail"))
    if not any(c.isalnum() for c in tail) or len(m.group("tail")) > _MAX_RUN or _NEXT_SETTING.match(text, tail_start):
        return None
    if _TAG_AT.match(text, tail_start) and _tag_is_markup(text, tail_start):
        return None
    if _SHELL_REFERENCE.search(tail):
        return None  # `TOKEN=x$(...)`, `x$HOME`: a substitution, a reference
    if _MARKER_OPEN in tail:
        # Another value's marker (`SecretID: [REDACTED]='[REDACTED]'`, where the first swallowed
        # the second's name): no rest of this one. (Read after it, only where the gates found it
        # again, it took the second marker too, and the two passes disagreed.)
        return None
    rest = m.group("tail")[len(tail) :]  # (another setting's, after a later cut: it stays)
    if _CONFIG_LINE_START.fullmatch(_line_prefix(text, name_start)):
        return "]" + rest
    out = _tail_after_a_cut_secret(tail)
    return None if out is None else out + rest


# What ends a sentence after a value ("Admin password: Xy7&Kp9q." , "(token: ab1;cd2)"): it stays.
_SENTENCE_END = ".,;:!?)]}'\""


def _tail_after_a_cut_secret(tail: str) -> Optional[str]:
    """The replacement for a value's tail elsewhere than at a config line's start, where the part
    before the cut was judged a secret on its own (its marker is there): a connection string's
    `Password=Xy7&Kp9q;`, "the key passphrase: X&3kP9q", "I set DB_PASSWORD=Ab1;Cd2 in .env".
    The characters a person put in the password are all of it, to the next space: keeping
    `&Kp9q` kept most of the secret. Sentence punctuation at the run's end stays."""
    body = tail.rstrip(_SENTENCE_END)
    if not any(c.isalnum() for c in body):
        return None
    return "]" + tail[len(body) :]


# A value that opens with punctuation, where the assignment rule's unquoted value cannot start
# (`DB_PASSWORD=&JUc8kP2x`, `password: (d7uQm4Lz`, a connection string's `Password=|g6vR2k;`):
# people put `&`, `(`, `|`, `'` or `<` first in a password too, and the rule then read no value at
# all, so the whole password stayed. (`=` and `:` first are left out: `password==x` compares.)
_PUNCTUATION_FIRST = "&(|',;<>[]{}~"
_LDAP_SCHEME_FIRST = re.compile(r"\{[A-Za-z][A-Za-z0-9@_-]{1,30}\}")
_PUNCTUATED_VALUE = re.compile(
    rf"(?:=(?P<eq_sep>{_after(_SECRET_WORDS, '=')})|:(?P<colon_sep>{_after(_SECRET_WORDS, ':')})(?!//))"
    rf"[ \t]*(?P<run>[&(|',;<>\[\]{{}}~]{_RUN_CHAR}{{1,{_MAX_RUN}}})"
)


def _replace_punctuated_value(text: str, m: "re.Match[str]") -> Optional[str]:
    """The marker for a value opening with punctuation, where it is a setting's whole value (its
    name opens a config line, or follows a connection string's `;`) and what follows the
    punctuation looks random, or, under a password's name, mixes upper and lower case and
    digits. YAML's `password: |` and `&anchor`, `<your-password>`, `{{ .Values.pw }}`,
    `password: [str]` and `(os.environ["PW"])` leave nothing random and stay."""
    i = m.start()
    while i > 0 and text[i - 1] in " \t\"'":
        i -= 1
    name_start = _name_start(text, i)
    kind = _name_kind(text[name_start:i])
    if kind is None:
        return None
    setting = name_start > 0 and text[name_start - 1] == ";"
    if not (setting or _CONFIG_LINE_START.fullmatch(_line_prefix(text, name_start).lstrip(" \t"))):
        return None
    run_start = m.start("run")
    body = _before_next_setting(m.group("run")).rstrip(_SENTENCE_END)
    if len(body) < 2 or "$" in body or "`" in body or _MARKER_OPEN in body or _is_placeholder(body):
        return None
    if _LDAP_SCHEME_FIRST.match(body):
        return None  # `userPassword: {SSHA}...`: a hash under its scheme, the LDAP rule's
    if _brackets_balance(body) and _CODE_IN_ONE_WORD.fullmatch(body):
        return None
    rest = body.lstrip(_PUNCTUATION_FIRST)
    mixed = (kind == _CHOSEN and len(rest) >= 8 and not any(c in rest for c in "_./\\")
             and any(c.isdigit() for c in rest) and any(c.isupper() for c in rest) and any(c.islower() for c in rest))
    if not (mixed or _looks_random(rest)) or not _plausible_secret(kind, rest):
        return None
    return text[m.start() : run_start] + _ASSIGNMENT_MARK + text[run_start + len(body) : m.end()]


def _replace_suffixed_assignment(text: str, m: "re.Match[str]") -> Optional[str]:
    at_separator = _ASSIGNMENT_AT_SEPARATOR.match(text, m.end("gap"))
    if at_separator is None or at_separator.end() != m.end():
        return None
    out = _replace_assignment(text, at_separator)
    return None if out is None else text[m.start() : m.end("gap")] + out


# R's assignment arrow: `api_key <- "v"`, `password <<- "v"`. Read as `=` (the arrow's two
# characters as ` =`), so the assignment rule judges name and value as it does everywhere.
_R_ARROW = re.compile(rf"-(?<=<-)[ \t]*{_VALUE}")


# How much text on each side of a separator read in another spelling (`<-` as `=`, `==` as `'=`)
# the assignment rule is shown: copying the whole text at every match made a text full of them
# quadratic (400 KB of `x <- ` took 4 s).
_RESPELT_WINDOW = 4096


def _assignment_respelt(text: str, start: int, stop: int, respelling: str, separator_at: int, end: int) -> Optional[str]:
    """The assignment rule's replacement for text[separator_at:end], with text[start:stop] read as
    `respelling` (of the same length), judged on a window of the text around it."""
    low, high = max(0, start - _RESPELT_WINDOW), min(len(text), end + _RESPELT_WINDOW)
    window = text[low:start] + respelling + text[stop:high]
    separator = _ASSIGNMENT_AT_SEPARATOR.match(window, separator_at - low)
    if separator is None or separator.end() != end - low:
        return None
    return _replace_assignment(window, separator)


def _replace_r_arrow(text: str, m: "re.Match[str]") -> Optional[str]:
    at = m.start()
    arrow = 3 if text[at - 2 : at] == "<<" else 2
    out = _assignment_respelt(text, at + 1 - arrow, at + 1, " " * (arrow - 1) + "=", at, m.end())
    return None if out is None else "-" + out[1:]


# HTTPie's and xh's query parameters, `name==value`: `http api.x.com api_key==T`. In their commands
# only (elsewhere `token=="x"` compares), read as `name=value`.
_HTTPIE_PARAM_LOOK = r"(?==[^=\s])" + _after(_SECRET_WORDS, "=")  # (the second `=` first: most `=` fail at once)
_HTTPIE_PARAM = re.compile(rf"={_HTTPIE_PARAM_LOOK}={_VALUE}")
# The program as a word of the command (`http`, `/usr/bin/xh`, `"https`), found by one regex: the
# words split and read one by one at every `==` of a long line made that line quadratic.
_HTTPIE_PROGRAM_WORD = re.compile(r"(?<![^\s/\"'`(\[{,=])(?:https?|xhs?)(?:\.exe)?(?=[\s\"'`]|\Z)")


def _replace_httpie_param(text: str, m: "re.Match[str]") -> Optional[str]:
    line = _line_prefix(text, m.start())
    if "http" not in line and "xh" not in line:  # (most `name==` are comparisons in code)
        return None
    if not _HTTPIE_PROGRAM_WORD.search(_command_text(text, m.start())):
        return None
    at = m.start()
    out = _assignment_respelt(text, at, at + 1, "'", at + 1, m.end())  # `api_key'=T`: the name ends at the quote
    return None if out is None else "=" + out


def _suffixed_assignment_gates() -> tuple[tuple[str, str], ...]:
    return tuple((word, _SUFFIXED_WORD_LOOK) for word in _SUFFIXED_ANCHORS) + (("_", _SUFFIXED_UNDERSCORE_LOOK),)


def _assignment_gates() -> tuple[tuple[str, str], ...]:
    return (("=", _after(_SECRET_WORDS + _FOREIGN_SECRET_WORDS, "=")), (":", _after(_SECRET_WORDS, ":")), (",", _COMMA_LOOK))


# `Authorization: Bearer x`, `"Authorization": "Basic x"`, `-H 'authorization: token x'`; and
# any other scheme, or none: Okta's `SSWS x`, Splunk's `Splunk x`, Discord's `Bot x`, OpsGenie's
# `GenieKey x`, Klaviyo's `Klaviyo-API-Key x`, Azure Storage's `SharedKey acct:sig`, a bare
# `Authorization: x` (the JSON view marks these whatever the scheme; the text view let them go).
# Under a scheme it does not know, or none, the value must look machine-made (a digit, or random
# case): `authorization: enabled` (mongod.conf) and "Authorization: see below" are words.
_AUTHORIZATION = re.compile(
    rf"(?:=(?P<eq_sep>{_after(('authorization',), '=')})|:(?P<colon_sep>{_after(('authorization',), ':')}))"
    r"[ \t]*\\*[\"']?[ \t]*(?:(?i:bearer|basic|token|digest)[ \t]+(?P<s>[A-Za-z0-9._~+/=-]{8,})"
    r"|(?:[A-Za-z][\w-]{1,30}[ \t]+)?(?P<other>[A-Za-z0-9._~+/=:-]{8,500})(?![^\s\"'\\,;]))"
)
# A bare `Bearer x` outside a header. Prose says "Bearer authentication", so the token must
# contain a digit and be long enough to be random.
_BEARER = re.compile(
    r"[Bb](?<![A-Za-z0-9_][Bb])(?i:earer)[ \t]+(?P<s>(?!--)(?=[A-Za-z0-9._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{16,})"
)
_BEARER_GATE = r"(?i:earer)[ \t]"
# A bare `Basic <base64>` (a header split from its name: `("Authorization", "Basic ...")`) goes when
# the base64 is `user:password`; prose says "Basic authentication".
_BASIC = re.compile(r"[Bb](?<![A-Za-z0-9_][Bb])(?i:asic)[ \t]+(?P<s>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")
_BASIC_GATE = r"(?i:asic)[ \t]"


def _replace_basic(text: str, m: "re.Match[str]") -> Optional[str]:
    return _replace_group(text, m, "s", _AUTHORIZATION_MARK) if _decodes_to_credentials(m.group("s")) else None


_AUTHORIZATION_MARK = marker("authorization")


def _replace_authorization(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.start("s") >= 0:
        return None if _is_placeholder(m.group("s")) else _replace_group(text, m, "s", _AUTHORIZATION_MARK)
    value = m.group("other")
    if _is_placeholder(value) or not _looks_made(value.replace(":", "")) or _HEX_COLOR.fullmatch(value):
        return None
    return _replace_group(text, m, "other", _AUTHORIZATION_MARK)
_AUTH_SCHEME = re.compile(r"[ \t]*(?i:bearer|basic|token|digest|negotiate|ntlm|ssws|apikey)[ \t]+")

# `Cookie:` and `Set-Cookie:` headers (curl -v, HTTP dumps, `-H "Cookie: ..."`, `{"Cookie": "..."}`):
# a session cookie logs its holder in as well as a password does. The header's value runs to the
# end of its line or string; in it, every `name=value` pair at its start or after a `;` loses its
# value, except Set-Cookie's attributes (`Path=/`, `Expires=...`), which say how, not what.
# (The first pair must be there: "the Set-Cookie: header" in prose has none.)
# A value may be quoted (`sid="abc"`, RFC 6265): the quotes are part of it, so a header inside a
# quoted string (`-H "Cookie: a=b"`) still ends at that string's closing quote.
_COOKIE_QUOTED = r'=\"[^\"\s,;\\]*\"'
_COOKIE = re.compile(
    rf":{_after(('cookie',), ':')}[ \t]*\\*[\"']?[ \t]*"
    rf"(?P<s>[^\s;=,\"'\\<>]+(?:{_COOKIE_QUOTED}|=)(?:{_COOKIE_QUOTED}|[^\r\n\"'\\])*)"
)
_COOKIE_PAIR = re.compile(r'(?:^|(?<=;))[ \t]*(?P<name>[^\s;=,]+)[ \t]*=(?:"(?P<quoted>[^"]*)"|(?P<value>[^;\s]*))')
_COOKIE_ATTRIBUTES = frozenset("path domain expires max-age samesite secure httponly priority partitioned version comment".split())
_COOKIE_MARK = marker("cookie")


def _mark_cookies(cookies: str) -> Optional[str]:
    """`cookies` (`a=1; b=2`, or Set-Cookie's `a=1; Path=/`) with each cookie's value marked, or
    None when it holds no cookie value (a file name after `curl -b`, a placeholder)."""
    parts, copied = [], 0
    for p in _COOKIE_PAIR.finditer(cookies):
        value = "quoted" if p.start("quoted") >= 0 else "value"
        if p.group("name").lower() in _COOKIE_ATTRIBUTES or _is_placeholder(p.group(value)):
            continue
        parts += [cookies[copied : p.start(value)], _COOKIE_MARK]
        copied = p.end(value)
    return "".join(parts) + cookies[copied:] if parts else None


def _replace_cookie(text: str, m: "re.Match[str]") -> Optional[str]:
    marked = _mark_cookies(m.group("s"))
    return None if marked is None else text[m.start() : m.start("s")] + marked


# scheme://user:password@host. The user part may be empty (redis://:pw@host).
# Neither part may hold `[` or `]`, so a marker already in the URL (`https://[REDACTED:x]@host`)
# is not read as user `[REDACTED` with password `x]`.
_URL_PASSWORD = re.compile(
    r"://(?<=[A-Za-z0-9]://)[^\s:/?#@'\"<>\\\[\]]*:(?P<s>[^\s@/?#'\"<>\\\[\]]+)@(?=[^\s@])"
)

_URL_PASSWORD_MARK = marker("url-password")
# GitHub's `https://TOKEN:x-oauth-basic@github.com/...` (and `x-oauth-token`): the password is a
# fixed word and the user the token.
_OAUTH_WORDS = frozenset({"x-oauth-basic", "x-oauth-token"})


def _replace_url_password(text: str, m: "re.Match[str]") -> Optional[str]:
    secret = m.group("s")
    if secret in _OAUTH_WORDS:
        user = m.group(0)[3 : m.start("s") - m.start() - 1]
        return None if not user or _is_placeholder(user) else "://" + _URL_PASSWORD_MARK + m.group(0)[3 + len(user) :]
    return None if _is_placeholder(secret) else _replace_group(text, m, "s", _URL_PASSWORD_MARK)


# scheme://TOKEN@host: a token as the whole user part, with no password after it: `git clone
# https://<40 hex>@github.com/org/repo.git` (a personal access token), a Sentry DSN's key
# (`https://<32 hex>@o1.ingest.sentry.io/1`). Only a user that looks random (see _looks_random):
# `ssh://git@host`, `https://jane-doe@bitbucket.org` are names.
# (Over HTTP only: `ssh://<24 hex>@ssh.hf.jobs` names a job, and SSH logs in with a key.)
_URL_TOKEN_USER = re.compile(r"://(?:(?<=http://)|(?<=https://)|(?<=wss://))(?P<s>[A-Za-z0-9_-]{20,200})@(?=[A-Za-z0-9])")


def _replace_url_token_user(text: str, m: "re.Match[str]") -> Optional[str]:
    token = m.group("s")
    if not _looks_random(token) or _is_placeholder(token):
        return None
    return _replace_group(text, m, "s", marker("url-password"))


# `--password hunter2`, `--api-key "x"` (the `--flag=value` form is an assignment).
# (`pass` only as a word of its own: `--pass`, `--db-pass`, not `--bypass`.)
# A double-quoted word's body: `\"` (a shell's, C's) and PowerShell's `` `" `` escape a quote inside it;
# read to the first quote, `--password "a\"b"` kept `b` in clear.
_DQ_BODY = r"(?:[^\"\\`\r\n]|[\\`][^\r\n])*"
_CLI_FLAG_WORDS = (
    r"(?:password|passwd|passphrase|token|secret|api-key|apikey|access-key|secret-key"
    r"|account-key|private-key|auth-key|bearer|(?<=-)pass|secret-string"
    # (Tailscale's `--authkey`, and keys named by whom they let in or what they guard.)
    r"|authkey|license-key|master-key|encryption-key|signing-key|admin-key|app-key|subscription-key)"
)
_CLI_FLAG_NAME = rf"-(?<![\w-]-)-[\w-]*?{_CLI_FLAG_WORDS}[ \t]+"
_CLI_FLAG = re.compile(
    rf"{_CLI_FLAG_NAME}(?:\"(?P<dq>{_DQ_BODY})\"|'(?P<sq>[^'\r\n]*)'|(?P<uq>[^\s\"'`;|&()<>\\-][^\s\"'`;|&()<>\\]*))"
)
_CLI_FLAG_MARK = marker("cli-flag")
_KEY_FLAG = re.compile(r"key[ \t]")
_KEY_FILE = re.compile(r"(?:~|\.{1,2})?/\S*|\S+\.(?:pem|key|json|p12|pfx|jks|asc|gpg|der|crt|pub)")


def _replace_cli_flag(text: str, m: "re.Match[str]") -> Optional[str]:
    group = next(g for g in ("dq", "sq", "uq") if m.start(g) >= 0)
    value = m.group(group)
    if _is_placeholder(value):
        return None
    if group == "uq" and _PROSE_WORD.fullmatch(value) and _MORE_WORDS.match(text, m.end()):
        return None  # "set it with the --password option and ..."
    if m.group(0).startswith("--secret") and m.group(0)[8] in " \t" and _pulumi_config_set(text, m.start()):
        return None  # a switch there: `pulumi config set --secret NAME VALUE` (VALUE: _POSITIONAL_SECRETS)
    if _KEY_FLAG.search(m.group(0)) and _KEY_FILE.fullmatch(value):
        return None  # `--signing-key ./keys/release.pem`, `--private-key ~/.ssh/id_ed25519`: where the key is
    return _replace_group(text, m, group, _CLI_FLAG_MARK)


def _pulumi_config_set(text: str, pos: int) -> bool:
    """Whether `pos` is in a `pulumi config set` command (not `set-all`, whose `--secret` takes K=V)."""
    words = _command_before(text, pos)
    at = next((i for i, w in enumerate(words) if _program_of(w) == "pulumi"), None)
    if at is None:
        return False
    after = words[at + 1 :]
    return [after[i] for i in _positional_args("pulumi", after)][:2] == ["config", "set"]


# --- AWS: the key id, and the secret key when it follows the id (credentials CSV, `id secret`) ---
# The secret access key alone has no shape of its own (40 base64 characters); it is caught under
# its name (`aws_secret_access_key = ...`, `"SecretAccessKey": ...`), after its id on one line
# (`AKIA...,wJalr...` in the console's credentials CSV), or in that CSV's column (_AWS_CSV).
_AWS_KEY_ID = re.compile(
    r"A(?:KIA|SIA)(?:(?<![A-Za-z0-9_-]AKIA)(?<![A-Za-z0-9_-]ASIA)|(?<=\\[nrt]AKIA)|(?<=\\[nrt]ASIA)"
    # Glued to a word by `_` or `-` (`keys_AKIA...`): the id's fixed length is shape enough.
    r"|(?<=[A-Za-z0-9][_-]AKIA)|(?<=[A-Za-z0-9][_-]ASIA))[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"(?:(?P<sep>[ \t]*[,;|:\t][ \t]*|[ \t]+)(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=]))?"
)
_AWS_ID_MARK, _AWS_SECRET_MARK = marker("aws-access-key-id"), marker("aws-secret-key")


def _replace_aws_key(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.group("secret") is None:
        return _AWS_ID_MARK
    return _AWS_ID_MARK + m.group("sep") + _AWS_SECRET_MARK


# The console's credentials CSV: a header naming the columns, then one row per key. Every column
# whose header names a secret (`Password`, `Secret access key`) goes, in every row below it.
# (The header is column names only, so that prose mentioning the column is not read as one.)
_CSV_HEADER = re.compile(
    r"(?im)^(?P<header>(?:[A-Za-z][\w ()-]{0,40},)*Secret access key(?:,[A-Za-z][\w ()-]{0,40})*\r?)(?P<rows>(?:\n[^\n]+)+)"
)


def _replace_csv(text: str, m: "re.Match[str]") -> Optional[str]:
    header = m.group("header").rstrip("\r").split(",")
    secret_columns = [i for i, name in enumerate(header) if is_secret_name(name.strip().replace(" ", "_"))]
    rows = m.group("rows").split("\n")
    out = []
    for n, row in enumerate(rows):
        cells = row.rstrip("\r").split(",")
        if n and len(cells) != len(header):
            out.extend(rows[n:])  # the table ended: what follows is not ours to change
            break
        if len(cells) == len(header):
            for i in secret_columns:
                if cells[i].strip() and not _is_placeholder(cells[i]):
                    cells[i] = _AWS_SECRET_MARK if "secret" in header[i].lower() else _ASSIGNMENT_MARK
            row = ",".join(cells) + ("\r" if row.endswith("\r") else "")
        out.append(row)
    new = m.group("header") + "\n".join(out)
    return None if new == m.group(0) else new


# --- short command-line flags that take a password, per program ---
# `mysql -phunter2`, `sshpass -p pw`, `curl -u user:pw`, `redis-cli -a pw`, `docker login -p pw`.
# A short flag means a password only for some programs (`mkdir -p`, `docker run -u 1000:1000`),
# so the rule reads the command the flag belongs to, and a table says which of its flags take a
# secret: (flag, how, form). `how`: "g" glued (-pSECRET: mysql takes `-p SECRET` as "prompt, then
# a database name"), "s" spaced, "gs" either. `form`: "" the whole value, ":" after the first
# colon (user:password), "%" after the first % (smbclient's user%password), "," after the first
# comma (lftp's user,password), "pass:" only a
# `pass:` value (openssl's -passin pass:x; env:VAR and file:path name no secret), "cookie" each
# value of a cookie list (curl -b 'a=1; b=2'; without a `=` it names a cookie jar file).
_FlagSpec = tuple[tuple[str, str, str], ...]
_MYSQL_FLAGS: _FlagSpec = (("p", "g", ""),)
_MONGO_FLAGS: _FlagSpec = (("p", "gs", ""),)
_LDAP_FLAGS: _FlagSpec = (("w", "s", ""),)
_LOGIN_FLAGS: _FlagSpec = (("p", "gs", ""),)
_FLAG_SECRETS: dict[str, _FlagSpec] = {
    **dict.fromkeys(
        ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlcheck", "mysqlshow", "mysqlslap", "mysqlsh",
         "mariadb", "mariadb-dump", "mariadb-admin", "mariadb-import", "mycli"),
        _MYSQL_FLAGS,
    ),
    **dict.fromkeys(("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport"), _MONGO_FLAGS),
    **dict.fromkeys(("ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapwhoami", "ldapcompare", "ldapmodrdn"), _LDAP_FLAGS),
    # ldappasswd: -w the bind password, -s the new one, -a the old one; slappasswd -s PW hashes PW.
    "ldappasswd": (("w", "s", ""), ("s", "s", ""), ("a", "s", "")),
    "slappasswd": (("s", "s", ""),),
    "sshpass": (("p", "gs", ""),),
    "redis-cli": (("a", "gs", ""),),
    "redis-server": (("-requirepass", "s", ""), ("-masterauth", "s", "")),
    "sqlcmd": (("P", "gs", ""),),
    # SNMPv3's auth and privacy passphrases; IPMI's password; Transmission's `-n user:pw`.
    **dict.fromkeys(("snmpwalk", "snmpget", "snmpset", "snmpbulkwalk", "snmpbulkget", "snmptable", "snmptrap", "snmpgetnext"),
                    (("A", "s", ""), ("X", "s", ""))),
    "ipmitool": (("P", "s", ""),),
    "transmission-remote": (("n", "s", ":"),),
    # FreeTDS's tsql and the old osql as sqlcmd; Vertica's vsql -w as ldapsearch.
    **dict.fromkeys(("tsql", "osql", "isql-fb"), (("P", "gs", ""),)),
    "vsql": (("w", "s", ""),),
    "bcp": (("P", "gs", ""),),
    "zip": (("P", "s", ""),),
    "unzip": (("P", "s", ""),),
    **dict.fromkeys(("7z", "7za", "7zz", "rar", "unrar"), (("p", "g", ""),)),
    "security": (("w", "s", ""),),  # macOS: security add-generic-password -w PW
    "ssh-keygen": (("N", "s", ""), ("P", "s", "")),
    "psexec": (("p", "s", ""),),
    "psexec.py": (("p", "s", ""),),
    # Remote-login tools: evil-winrm, CrackMapExec/NetExec and rdesktop `-p PW`; PuTTY's `-pw PW`.
    **dict.fromkeys(("evil-winrm", "crackmapexec", "cme", "nxc", "netexec", "rdesktop"), (("p", "s", ""),)),
    **dict.fromkeys(("plink", "pscp", "psftp"), (("pw", "s", ""),)),
    "twine": (("p", "s", ""),),  # twine upload -u __token__ -p pypi-...
    # useradd/usermod -p take a crypt hash, and people hand them the password itself; hydra -p
    # the password it tries.
    **dict.fromkeys(("useradd", "usermod", "hydra"), (("p", "s", ""),)),
    **dict.fromkeys(("mosquitto_pub", "mosquitto_sub", "mosquitto_rr"), (("P", "s", ""), ("-pw", "s", ""))),
    "lftp": (("u", "s", ","),),  # lftp -u user,PW host
    **dict.fromkeys(("curl", "curlie"), (("u", "gs", ":"), ("-user", "s", ":"), ("-proxy-user", "s", ":"), ("U", "s", ":"), ("b", "s", "cookie"), ("-cookie", "s", "cookie"))),
    # HTTPie and xh: `-a user:PW`; `-a TOKEN` under `-A bearer` (or a value no user name looks like).
    **dict.fromkeys(("http", "https", "xh", "xhs"), (("a", "s", "auth"), ("-auth", "s", "auth"))),
    # (Samba's tools and winexe take `-U user%PW`; smbmap also `-u user -p PW`.)
    **dict.fromkeys(("smbclient", "rpcclient", "smbget", "smbcacls", "smbtree", "winexe", "pth-winexe", "net"), (("U", "gs", "%"),)),
    "smbmap": (("U", "gs", "%"), ("p", "s", "")),
    # Load testers and scanners that take `user:PW`: ApacheBench's `-A`, hey's `-a`, hurl's `--user`,
    # wfuzz's `--basic`, nikto's `-id`; gobuster's `-P` after `-U`; sqsh's `-P` (as sqlcmd's).
    "ab": (("A", "s", ":"),),
    "hey": (("a", "s", ":"),),
    "hurl": (("-user", "s", ":"),),
    "wfuzz": (("-basic", "s", ":"), ("-ntlm", "s", ":"), ("-digest", "s", ":")),
    "nikto": (("id", "s", ":"),),
    "gobuster": (("P", "s", ""), ("-password", "s", "")),
    "sqsh": (("P", "gs", ""),),
    **dict.fromkeys(
        ("keytool", "jarsigner"),
        tuple((f, "s", "") for f in ("storepass", "keypass", "srcstorepass", "deststorepass", "srckeypass", "destkeypass")),
    ),
    # Database shells that take `-u USER -p PW` (Cassandra, Neo4j, RabbitMQ's management CLI),
    # and Windows' certutil (`certutil -importpfx -p PW cert.pfx`).
    **dict.fromkeys(("cqlsh", "cypher-shell", "rabbitmqadmin", "certutil"), (("p", "s", ""),)),
    # CLIs that take an API token as `-t TOKEN`: InfluxDB 2's, DigitalOcean's (`doctl auth init
    # -t`), Codecov's uploader.
    **dict.fromkeys(("influx", "doctl", "codecov", "codecovcli"), (("t", "s", ""),)),
    "etcdctl": (("-user", "s", ":"),),  # etcdctl --user root:PW
    # Go-style single-dash flags: `consul acl token create -secret S`, `consul members -token T`, `nomad -token T`.
    **dict.fromkeys(("consul", "nomad"), (("secret", "s", ""), ("token", "s", ""))),
    "openssl": (("k", "s", ""), ("pass", "s", "pass:"), ("passin", "s", "pass:"), ("passout", "s", "pass:"), ("password", "s", "pass:")),
}
# These only after a subcommand: `docker login -p`, `az login -p`, `gh secret set NAME -b`.
_FLAG_SUBCOMMANDS: dict[str, tuple[str, _FlagSpec]] = {
    **{prog: ("login", _LOGIN_FLAGS) for prog in ("docker", "podman", "buildah", "skopeo", "nerdctl", "helm", "oras", "az", "cf", "oc",
                                                  "crane", "regctl")},
    "gh": ("secret", (("b", "gs", ""), ("-body", "s", ""))),
    "dotnet": ("nuget", (("p", "s", ""), ("k", "s", ""))),  # add source -p PW, push -k KEY
}
# Any program: single-dash long flags that say password (`influx -password pw`), and PowerShell's
# and nuget's (`-Password pw`, `nuget push -ApiKey key`, `Publish-Module -NuGetApiKey key`).
# (SecretManagement's `Set-Secret -Name db -Secret pw`.)
_ANY_PROGRAM_FLAGS: _FlagSpec = tuple((f, "s", "") for f in ("password", "passwd", "Password", "ApiKey", "NuGetApiKey", "Secret")) + (
    # And long flags that take `USER:PW`, whatever the program: container tools' `--creds`,
    # `--src-creds`, `--dest-creds` (skopeo, podman, buildah), `--basic-auth`, `--proxy-user`,
    # mitmproxy's `--proxyauth`, sqlmap's `--auth-cred`. Only the part after the colon goes; with
    # no colon there is no password (`--creds bob` prompts).
    tuple((f, "s", ":") for f in ("-creds", "-src-creds", "-dest-creds", "-basic-auth", "-basicauth", "-proxy-user", "-proxyauth",
                                  "-proxy-auth", "-auth-cred", "-auth"))
)
# A program that no table knows, with a user named before it (`-u admin` or `--user admin`): its
# `-p` is the user's password, the idiom of CLIs beyond count (`snowsql -a acct -u me -p PW`,
# `mongostat -u u -p PW`, `java -jar tool.jar -u admin -p PW`). Not when the value reads as
# something else that `-p` takes: a port or pid (`-p 8080:80`, `-p 1234,5678`), a path or a file
# (`gunicorn -u www -p /run/app.pid`, `vim -u vimrc -p a.txt`), a format with `%`.
_USER_FLAGS = frozenset({"-u", "-U", "--user", "--username", "-user", "-username"})
_USER_NAME = re.compile(r"[\w@$.-]+(?<!\.[A-Za-z])(?<!\.[A-Za-z]{2})(?<!\.[A-Za-z]{3})")
_USER_THEN_PASSWORD: _FlagSpec = (("p", "s", "guess"),)
_NOT_A_PASSWORD = re.compile(r"[\d,:.-]+|.*[/\\%].*|.*\.[A-Za-z][A-Za-z0-9]{0,4}")
# (sudo's and doas's `-p` is a prompt: `sudo -u postgres -p 'pw for %u: ' psql`.)
_PROMPT_P_PROGRAMS = frozenset({"sudo", "doas"})
# A program that another one runs (`sshpass -p pw ssh -p 22 host`): its flags are its own.
_OTHER_PROGRAMS = frozenset({"ssh", "scp", "sftp", "rsync", "git", "sudo", "env", "xargs"})
_FLAG_ARG = r"(?:[^\s\"'`;|&<>()\\]|\"" + _DQ_BODY + r"\"|'[^'\r\n]*')"
_SHORT_FLAG_GATE = r"(?<=[ \t]-)(?=-?[A-Za-z])"
_SHORT_FLAG = re.compile(rf"-(?<=[ \t]-)(?P<word>-?[A-Za-z]{_FLAG_ARG}*)(?:[ \t]+(?![-|;&])(?P<arg>{_FLAG_ARG}+))?")
_COMMAND_BREAK = re.compile(r".*(?:\|\||&&|[|;&`(]|\$\()")
# What may open a command glued to the word before it: a quote or a bracket (not `=`:
# `docker run --name=mysql -p3306:3306` names a container, it does not run mysql).
_PROGRAM_OPENERS = re.compile(r"[\"'`(\[{,]")
_CLI_MARK = marker("cli-flag")


def _program_of(word: str) -> str:
    """The program a command word names: quotes and brackets around it cut off (`{"cmd": "curl`,
    `subprocess.run(["mysql"`; the command may open a quoted value glued to what precedes it:
    `MYSQL="mysql`, `alias db='redis-cli`, `{"command":"sshpass`, `f"curl`), its directory and
    `.exe` too."""
    prog = _PROGRAM_OPENERS.split(word.rstrip("\"'`([{,"))[-1].rsplit("/", 1)[-1].removesuffix(".exe")
    if ":" in prog:  # a search result's line: `deploy/app.sh:7:mysql -u root -p shop`
        tail = prog.rsplit(":", 1)[1]
        if tail in _FLAG_SECRETS or tail in _FLAG_SUBCOMMANDS or tail in _OTHER_PROGRAMS or tail in _PROMPT_P_PROGRAMS:
            return tail
    return prog


class _CommandState:
    """The nearest known program among a command's words so far (None: none, or one that runs
    another, whose flags are its own), and for a program with a subcommand whether it came; and
    whether a user was named (`-u bob`) in a command of no known program."""

    __slots__ = ("prog", "sub_seen", "user", "user_next", "no_guess")

    def __init__(self) -> None:
        self.prog: Optional[str] = None
        self.sub_seen = False
        self.user = False  # `-u NAME` came (a name, not a file: `python -u app.py`)
        self.user_next = False
        self.no_guess = False  # `sudo -u bob -p 'prompt: '`: -p is sudo's prompt there

    def add(self, word: str) -> None:
        if not word:
            return
        if word[0] == "-":  # a flag: never a program (most words of a long command)
            self.user_next = word in _USER_FLAGS
            if word.startswith(("--user=", "--username=")):
                self.user = True
            return
        if self.user_next:
            self.user_next = False
            self.user = self.user or _USER_NAME.fullmatch(word) is not None
        prog = _program_of(word)
        if prog in _FLAG_SECRETS or prog in _FLAG_SUBCOMMANDS:
            self.prog, self.sub_seen, self.user = prog, False, False
        elif prog in _OTHER_PROGRAMS or prog in _PROMPT_P_PROGRAMS:
            self.prog = None
            self.no_guess = self.no_guess or prog in _PROMPT_P_PROGRAMS
        elif self.prog in _FLAG_SUBCOMMANDS and word == _FLAG_SUBCOMMANDS[self.prog][0]:
            self.sub_seen = True

    def flags(self) -> _FlagSpec:
        if self.prog in _FLAG_SECRETS:
            return _FLAG_SECRETS[self.prog] + _ANY_PROGRAM_FLAGS
        if self.prog in _FLAG_SUBCOMMANDS:
            if self.sub_seen:
                return _FLAG_SUBCOMMANDS[self.prog][1] + _ANY_PROGRAM_FLAGS
            # (Its other subcommands are commands no table knows: `az sql server create -u admin -p PW`.)
            return _ANY_PROGRAM_FLAGS + (_USER_THEN_PASSWORD if self.user and not self.no_guess else ())
        if self.user and not self.no_guess:
            return _ANY_PROGRAM_FLAGS + _USER_THEN_PASSWORD
        return _ANY_PROGRAM_FLAGS


def _command_flags(words: list[str]) -> _FlagSpec:
    """The password-taking flags of the nearest known program among `words`, a command's words
    (or an argv list's items) up to the flag, in order."""
    state = _CommandState()
    for word in words:
        state.add(word)
    return state.flags()


# Where a command ends: a line's end (a JSON-escaped `\n` too), `|`, `;`, `&`, a backtick or `(`
# (`||`, `&&` and `$(` hold one of these).
_COMMAND_END = re.compile(r"\n|\\n|[|;&`(]")
# The last text whose flags were looked up, the offset looked up, and the command's state there
# (per thread): the flags of one text are looked up in order, and each lookup reads on from
# the last one. Reading each flag's whole line cost a line of a thousand flags (a compiler's, in
# `make VERBOSE=1` output) a million words: 93 s for 10 MB.
_SCAN = threading.local()


def _diff_marker(text: str, start: int) -> int:
    """1 when the line at `start` opens with a unified diff's `+` or `-` glued to a word (`git
    diff`'s `+curl -u bob:pw ...`, `-mysql -pPW`), else 0: the command starts after it."""
    return 1 if text[start : start + 1] in ("+", "-") and text[start + 1 : start + 2].isalpha() else 0


def _program_flags(text: str, pos: int) -> _FlagSpec:
    """The password-taking flags of the program that the flag at `pos` belongs to: the nearest
    known program before it in its command (after the last `|`, `;`, `&&` on its line)."""
    last = getattr(_SCAN, "last", None)
    if last is not None and last[0] is text and last[1] <= pos:
        start, state = last[1], last[2]
    else:
        escaped = text.rfind("\\n", 0, pos)
        start, state = max(text.rfind("\n", 0, pos) + 1, escaped + 2 if escaped >= 0 else 0), _CommandState()
        start += _diff_marker(text, start)
    end = None
    for end in _COMMAND_END.finditer(text, start, pos):
        pass
    if end is not None:
        start, state = end.end(), _CommandState()
        if end.group() in ("\n", "\\n"):
            start += _diff_marker(text, start)
    for word in text[start:pos].split():
        state.add(word)
    _SCAN.last = (text, pos, state)
    return state.flags()


def _mark_arg(token: str, form: str) -> Optional[str]:
    """`token` (a flag's value, maybe quoted) with its secret part marked, or None if it has none."""
    quote = token[0] if len(token) >= 2 and token[0] in "\"'" and token[-1] == token[0] else ""
    inner = token[1:-1] if quote else token
    keep = ""
    if form == "cookie":
        marked = _mark_cookies(inner)
        return None if marked is None else quote + marked + quote
    if form in (":", "%", ","):
        if form not in inner or _MARKER_OPEN in inner:
            # (A marker's own colon: `-u [REDACTED:cli-flag]:` is done.)
            return None  # curl -u user: prompts for the password
        user, inner = inner.split(form, 1)
        if form == ":" and not inner and len(user) >= 16 and _looks_random(user) and not _is_placeholder(user):
            return quote + _CLI_MARK + ":" + quote  # `curl -u KEY:`: an API key as the user, no password (Stripe's, Chargebee's)
        keep = user + form
    elif form == "guess" and _NOT_A_PASSWORD.fullmatch(inner):
        return None
    elif form == "pass:":
        if not inner.startswith("pass:"):
            return None
        keep, inner = "pass:", inner[5:]
    if not inner or _is_placeholder(inner.strip("\"'")):
        return None
    return quote + keep + _CLI_MARK + quote


def _within_string(text: str, m: "re.Match[str]") -> Optional["re.Match[str]"]:
    """The flag's match cut at the `"` that closes the string its command sits in (a JSON value,
    `MYSQL="mysql -pPW"`), or None when it needs no cut. A shell word may hold quotes
    (`-p"my pw"`), so the match runs on through `", "next": "` in JSON and took the rest of the
    document for the password."""
    if _line_prefix(text, m.start()).count('"') % 2 == 0:
        return None
    cut = text.find('"', m.start(), m.end())
    return _SHORT_FLAG.match(text, m.start(), cut) if cut >= 0 else None


# Every flag that some program here takes a secret with: a first look turns most flags away
# before their program is looked for (a compiler's line is thousands of flags, none of these).
_SECRET_FLAGS = frozenset(
    flag for spec in (*_FLAG_SECRETS.values(), *(flags for _, flags in _FLAG_SUBCOMMANDS.values()), _ANY_PROGRAM_FLAGS)
    for flag, _, _ in spec
)
_SECRET_FLAG_START = re.compile("|".join(sorted(map(re.escape, _SECRET_FLAGS), key=len, reverse=True)))
_SECRET_FLAG_LETTERS = frozenset(flag for flag in _SECRET_FLAGS if len(flag) == 1)


def _may_take_secret(word: str) -> bool:
    """Whether _replace_flag could find a secret flag in `word` for any program: it starts with
    one (`-p`, `-pPW`, `--user=x`), or is a cluster of letters ending in a one-letter one (`-sSfu`).
    (Up to a quote: a flag inside a JSON string is cut there, see _within_string.)"""
    word = word.partition('"')[0]
    return _SECRET_FLAG_START.match(word) is not None or (word.isalpha() and word[-1] in _SECRET_FLAG_LETTERS)


def _replace_short_flag(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _may_take_secret(m.group("word")):
        return None
    inner = _within_string(text, m)
    if inner is not None:
        new = _replace_short_flag(text, inner)
        return None if new is None else new + text[inner.end() : m.end()]
    return _replace_flag(text, m, _program_flags(text, m.start()))


# HTTPie's `-A bearer` / `--auth-type=bearer` (or jwt, token, an API-key plugin's scheme): its
# `-a`/`--auth` takes the token itself, no `user:` before it.
_HTTPIE_AUTH_TYPE = re.compile(r"(?:[ \t]-A|[ \t]--auth-type)(?:[ \t]+|=)[\"']?(?!basic\b|digest\b)[\w-]+")
_LINE_REST = re.compile(r"[^\r\n|;&]*")


def _auth_form(text: str, pos: int, value: str) -> str:
    """The form of HTTPie's `-a VALUE` at `pos`: `user:PW` (":"), or a token (""): under an auth
    type other than basic and digest anywhere in the command, or a value no user name looks like."""
    inner = value.strip("\"'")
    if ":" in inner:
        return ":"
    command = _command_text(text, pos) + _LINE_REST.match(text, pos).group()
    return "" if _HTTPIE_AUTH_TYPE.search(command) or _looks_random(inner) else ":"


def _replace_flag(text: str, m: "re.Match[str]", flags: _FlagSpec) -> Optional[str]:
    """The flag that `m` matched (groups `word`, the flag less its first `-`, and `arg`, the word
    after it) with its secret marked, if `flags`, its program's, say it takes one."""
    word, arg = m.group("word"), m.group("arg")
    cluster = len(word) > 1 and word.isalpha()
    for flag, how, form in flags:
        if flag[0] != word[0] and not (cluster and len(flag) == 1):
            continue  # (no way to match: most flags of a long spec, tried for every flag of a command)
        if form == "auth":
            glued = word[len(flag) + 1 :] if word.startswith(flag + "=") else None
            form = _auth_form(text, m.start(), glued if glued is not None else arg or "")
        if flag.startswith("-") and word.startswith(flag + "="):  # --user=bob:pw
            new = _mark_arg(word[len(flag) + 1 :], form)
            if new is not None:
                return "-" + flag + "=" + new + text[m.end("word") : m.end()]
        if "g" in how and len(word) > len(flag) and word.startswith(flag) and not (flag == "pass" and word[4:5].isalpha()):
            new = _mark_arg(word[len(flag) :], form)
            if new is not None:
                return "-" + flag + new + text[m.end("word") : m.end()]
        # (`curl -sSfu user:pw`: a cluster of one-letter flags ending in this one takes its value.)
        clustered = len(flag) == 1 and cluster and word.endswith(flag)
        if "s" in how and (word == flag or clustered) and arg is not None:
            new = _mark_arg(arg, form)
            if new is not None:
                return "-" + word + text[m.end("word") : m.start("arg")] + new
    return None


# --- the same flags in an argv list, each word a quoted item: `subprocess.run(["sshpass", "-p",
# "PW", ...])`, `exec.Command("redis-cli", "-a", "PW")`, `spawn('psql', ['--password', 'PW'])`.
# The flag's value is the next item, if it is a literal (a variable, `password`, is code). The
# program is the nearest known one among the items before the flag, over line breaks too (a list
# of one item a line), found by `_argv_before`; long flags that say secret (`--password`) take a
# value whatever the program, as in a shell command.
_ARGV_FLAG = re.compile(
    r"-(?<=(?P<q>[\"'])-)(?P<word>-?[A-Za-z][^\"'\\\r\n]*)(?P=q)"
    r"(?:[ \t]*,\s*(?P<arg>\"(?!-)[^\"\\\r\n]*\"|'(?!-)[^'\\\r\n]*'))?"
)
_ARGV_GATE = r"(?<=[\"']-)(?=-?[A-Za-z])"
_LONG_SECRET_FLAG = re.compile(rf"-[\w-]*?{_CLI_FLAG_WORDS}")
# Read backwards from a flag's opening quote (on the text reversed): separators, then a quoted
# item or a bare name (a variable, `["mysql", "-u", user, "-pPW"]`, or the call, `exec.Command(`).
_ARGV_ITEM_REVERSED = re.compile(r"[\s,\[(]*(?:([\"'])([^\"'\\\r\n]*)\1|([\w.]+))")
_ARGV_LOOKBACK = 500


def _argv_before(text: str, end: int) -> list[str]:
    """The items of the argv list or call that ends at `end`, in order, unquoted; it starts
    where something other than items and separators comes (`cmd = [`, `)` of a previous call)."""
    rev = text[max(0, end - _ARGV_LOOKBACK) : end][::-1]
    words, i = [], 0
    while m := _ARGV_ITEM_REVERSED.match(rev, i):
        words.append((m.group(2) if m.group(1) else m.group(3))[::-1])
        i = m.end()
    return words[::-1]


def _replace_argv_flag(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.group("arg") is None and len(m.group("word")) < 2:
        return None  # "-v": no value of its own, none after it
    if m.group("arg") is not None and _LONG_SECRET_FLAG.fullmatch(m.group("word")):
        new = _mark_arg(m.group("arg"), "")
        if new is not None:
            return text[m.start() : m.start("arg")] + new
    return _replace_flag(text, m, _command_flags(_argv_before(text, m.start() - 1)))


# --- NAME VALUE settings without `=`: Dockerfile `ENV NAME value`, csh `setenv NAME value`,
# fish `set -gx NAME value`, `aws configure set NAME value`, `npm config set NAME value`,
# `dotnet user-secrets set "Name" "value"`. The name must be a secret's, as for assignments.
# (Apache's `SetEnv NAME value`; nginx's `fastcgi_param NAME value;` and uwsgi's, scgi's; PHP's
# `php_value`/`php_admin_value NAME value` in Apache's config, as php-fpm's `env[NAME] = value`.)
_SPACED_SETTING_REST = (
    r"[ \t]+(?:-[\w-]+[ \t]+)*(?P<name>[^\s=\"'`]+|\"[^\"\s]+\"|'[^'\s]+')[ \t]+"
    r"(?:\"(?P<dq>[^\"\r\n]*)\"|'(?P<sq>[^'\r\n]*)'|(?:(?P<uq>[^\s\"'`;|&()<>\\-][^\s\"'`;|&()<>\\]*)"
    # (A value that opens with punctuation, `ENV DB_PASSWORD (9fRq2x`; and the rest of the value's
    # run after punctuation cut it: judged as a whole in _spaced_setting_run.)
    r"|(?P<pq>[;|&()<>]))(?P<more>" + _RUN_CHAR + f"{{0,{_MAX_RUN}}}))"
)
_SPACED_SETTING = re.compile(r"(?:set(?<![\w.-]set)(?:env|x)?|ENV(?<![\w.-]ENV))" + _SPACED_SETTING_REST)
_SPACED_SETTING_MORE = re.compile(
    r"(?:SetEnv(?<![\w.-]SetEnv)|(?:fastcgi|uwsgi|scgi)_param|php(?<![\w.-]php)_(?:admin_)?value|(?:proxy|grpc)_set_header"
    r"|passenger_env_var)" + _SPACED_SETTING_REST
)
# Caddy's `env NAME value` directive (a site block's `php_fastcgi { env API_TOKEN x }`): the
# name an environment variable's, in upper case, no flags before it (`env -u NAME cmd` is a
# shell's `env`, and what follows the name there is a command).
_CADDY_ENV = re.compile(
    r"env(?<![\w.$/-]env)[ \t]+(?P<name>[A-Z][A-Z0-9_]*)[ \t]+"
    r"(?:\"(?P<dq>[^\"\r\n]*)\"|'(?P<sq>[^'\r\n]*)'|(?P<uq>[^\s\"'`;|&()<>\\{}-][^\s\"'`;|&()<>\\{}]*))"
)


_LINKING_WORDS = frozenset({"for", "to", "as", "is", "of", "on", "in", "with", "from", "and", "or"})


def _spaced_setting_run(text: str, m: "re.Match[str]", kind: str) -> Optional[tuple[int, int]]:
    """The span of a spaced setting's whole unquoted value where punctuation cut it short: the
    setting's line holds one value after the name, so `ENV DB_PASSWORD Xy7&Kp9q` and `setenv
    DB_PASSWORD yR(9frq=vK` run to the first space (the value read stopped at the punctuation and
    kept `&Kp9q`, `(9frq=vK` in clear). Not when the run is code or a reference (`$(cat f)`,
    `${X}`, `` `cmd` ``, `get_pw()`), nor markup (`x<br>`); nginx's `;` ending its directive stays."""
    group = "uq" if m.start("uq") >= 0 else "pq"
    start, end = m.start(group), m.end("more")
    if text[end - 1] == ";" and end - 1 > start:
        end -= 1
    whole = text[start:end]
    if end <= m.end(group) or len(m.group("more")) >= _MAX_RUN or not any(c.isalnum() for c in text[m.end(group) : end]):
        return None
    if _SHELL_REFERENCE.search(whole) or whole.count("`") >= 2 or _MARKER_OPEN in whole:
        return None
    if _brackets_balance(whole) and _CODE_IN_ONE_WORD.fullmatch(whole):
        return None
    for i, c in enumerate(whole):
        if c == "<" and _TAG_AT.match(text, start + i) and _tag_is_markup(text, start + i):
            return None  # `x<br>`: markup after the value
    if group == "pq" or not _plausible_secret(kind, m.group("uq")):
        # Nothing before the punctuation to judge: what follows it must look random, or, under a
        # password's name, mix upper and lower case and digits (`<your-password>`, `(x)` stay).
        rest = whole.lstrip(_PUNCTUATION_FIRST)
        mixed = (kind == _CHOSEN and len(rest) >= 8 and any(c.isdigit() for c in rest)
                 and any(c.isupper() for c in rest) and any(c.islower() for c in rest))
        if not (mixed or _looks_random(rest)) or _is_placeholder(rest):
            return None
    return start, end


def _replace_spaced_setting(text: str, m: "re.Match[str]") -> Optional[str]:
    # (Capistrano's `set :password, "pw"`: a symbol and a comma.)
    kind = _name_kind(m.group("name").strip("\"'").removeprefix(":").removesuffix(","))
    if kind is None:
        return None
    group = next(g for g in ("dq", "sq", "uq", "pq") if m.start(g) >= 0)
    if group in ("uq", "pq") and "pq" in m.re.groupindex:
        whole = text[m.start(group) : m.end("more")].removesuffix(";")
        if _SHELL_REFERENCE.match(whole) or (_brackets_balance(whole) and _CODE_IN_ONE_WORD.fullmatch(whole)):
            return None  # `ENV DB_PASSWORD $(cat f)`, `SetEnv DB_PASSWORD get_password()`: code (the `$` or the name went)
        span = _spaced_setting_run(text, m, kind)
        if span is not None:
            return text[m.start() : span[0]] + _ASSIGNMENT_MARK + text[span[1] : m.end()]
        if group == "pq":
            return None
    value = m.group(group)
    if not _plausible_secret(kind, value) or (group == "uq" and _DOTTED_REF.fullmatch(value) and not _looks_random(value)
                                              and not (kind == _CHOSEN and _dotted_password(value))):
        return None
    if group == "uq" and _PROSE_WORD.fullmatch(value) and _MORE_WORDS.match(text, m.end()):
        return None  # "set the API_KEY variable to ..."
    if group == "uq" and value.lower() in _LINKING_WORDS:
        return None  # SQL's `set password for 'bob'@'%' = 'pw'` (the SQL rule's), "set password to x"
    return _replace_group(text, m, group, _ASSIGNMENT_MARK)


# A config file's password token, to the first space: a quote or a backslash inside it is the
# password's (`Ab'c"d\\e`; netrc and redis.conf read a token to whitespace). Read to the first
# quote or backslash, the rest stayed in clear. Where the text is a JSON string, a quote that
# closes it (before a space, `,`, `}`, `]`, `:` or the end), a quote before which the line ends
# in the password's own quote, and an escaped break (`\\n`) end the token still; so does a
# quote closing a shell string around it (`echo '... password PW' >> ~/.netrc`).
_CONF_TOKEN_REST = r"""(?:[^\s"'\\]|'(?=[^\s"\\])|"(?=[^\s,}\]:"\\])|\\\\(?![nrt\\])|\\(?![nrt"\\\s]))"""
# .netrc / _netrc: `machine HOST login USER password PW`, on one line or several, any order.
# A `login` must come before the password or right after it: prose says "machine translation
# password reset" too.
# (And netrc's `default` entry, opening its line: `default login bob password PW`.)
_NETRC = re.compile(
    r"(?:machine[ \t]+\S+|(?:^|(?<=[\r\n]))[ \t]*default)(?:\s+(?:account|port|protocol)[ \t]+\S+)*\s+(?:(?P<login>login)[ \t]+\S+"
    r"(?:\s+(?:account|port|protocol)[ \t]+\S+)*\s+)?password[ \t]+(?P<s>[^\s\"'\\]" + _CONF_TOKEN_REST + r"*)(?(login)|(?=\s+login[ \t]+\S))"
)
# redis.conf: `requirepass PW`, `masterauth PW`; LDAP clients' `bindpw PW` (ldap.conf, nslcd.conf,
# pam_ldap), slapd.conf's `rootpw PW`, a kickstart's `rootpw --plaintext PW`: those two as a
# line's directive only (a comment says "# bindpw is read from ...").
# (A value stops at a quote or backslash: inside a JSON string those close it.)
_REDIS_CONF = re.compile(
    r"(?:requirepass|masterauth|(?m:^|(?<=\\n))[ \t]*(?:bindpw|rootpw))[ \t]+(?:--\w+[ \t]+)*(?:\{[\w-]+\}(?=[^\s#\"'\\]))?"
    # (Quoted too: `CONFIG SET requirepass "pw"`, redis.conf's `requirepass "pw"`.)
    # (Redis reads `\"` in a double-quoted value, and a `#` inside a token as the token's: only
    # a line that opens with `#` is a comment.)
    r"(?:\"(?P<qs>(?:[^\"\\\r\n]|\\[^\r\n])+)\"|'(?P<sqs>(?:[^'\\\r\n]|\\[^\r\n])+)'"
    r"|(?P<s>[^\s#\"'\\-]" + _CONF_TOKEN_REST + r"*))"
)
_LDAP_MARK, _REDIS_CONF_MARK = marker("ldap-password"), marker("redis-password")
# msmtprc's (and other mail clients' rc files') `password PW` directive: `password` opening a
# line and one word after it, to the line's end. Prose opens lines with "password" too ("password
# reset", "password required"), so the word must look made or chosen, as prose-secret's must
# (letters with digits or symbols).
_PASSWORD_DIRECTIVE = re.compile(r"(?m)^[ \t]*password[ \t]+(?P<s>[^\s\"'\\#]+)[ \t]*\r?$")
_PASSWORD_DIRECTIVE_GATE = r"(?=[ \t]+[^\s\"'\\#]+[ \t]*\r?(?:\n|\Z))"


# Network devices' and proxies' config lines: Cisco IOS's `username admin privilege 15 password 0
# pw` and `enable secret 0 pw` (type 0 is the password in clear, type 7 a reversible encoding;
# 5, 8, 9 are hashes, `$1$...` ones the crypt rule reads), HAProxy's `user admin insecure-password
# pw`; and fetchmail's and the like `user "bob" password "pw"` (a quoted password after a user on
# its line).
_DEVICE_PASSWORD = re.compile(
    r"(?:password(?<=[ \t]password)|secret(?<=[ \t]secret))[ \t]+[07][ \t]+(?P<s>[^\s\"'\\]+)[ \t]*(?=\r?\n|\Z)"
    r"|password(?<=insecure-password)[ \t]+(?P<h>[^\s\"'\\]+)"
    r"|password(?<=[ \t]password)[ \t]+\"(?P<q>[^\"\r\n\\]+)\"(?<=[\w\"])"
)
_DEVICE_PASSWORD_LOOK = r"(?:(?<=insecure-password)(?=[ \t]+\S)|(?=[ \t]+(?:[07][ \t]+[^\s\"'\\]+[ \t]*(?:\r?\n|\Z)|\"[^\"\r\n\\]+\")))"
_CISCO_LINE = re.compile(r"[ \t]*(?:username[ \t]+\S+(?:[ \t]+privilege[ \t]+\d+)?|enable|line[ \t][^\r\n]*)[ \t]+\Z")
_USER_ON_LINE = re.compile(r"(?:^|[\s;])user(?:name)?[ \t]+[\"']?[^\s\"']+[\"']?(?:[ \t]+\S+){0,3}[ \t]+\Z")


def _replace_device_password(text: str, m: "re.Match[str]") -> Optional[str]:
    group = next(g for g in ("s", "h", "q") if m.start(g) >= 0)
    if group == "q" and not _USER_ON_LINE.search(_line_prefix(text, m.start())):
        return None  # `password "x"` alone: a DSL's or prose's, not a login line
    if group == "s" and not _CISCO_LINE.fullmatch(_line_prefix(text, m.start())):
        return None  # "reset the password 0 times": no device's config line
    return None if _is_placeholder(m.group(group)) else _replace_group(text, m, group, _CLI_MARK)


def _replace_password_directive(text: str, m: "re.Match[str]") -> Optional[str]:
    value = m.group("s")
    if _is_placeholder(value) or not (_MIXED.match(value) or _looks_random(value)) or value.startswith(("/", "~", "$")):
        return None
    return _replace_group(text, m, "s", _MAIL_MARK)


# --- Mail sync configs. mbsync/isync's .mbsyncrc: an `IMAPAccount` (or an old-style `IMAPStore`)
# block's `Pass PW` line; its `PassCmd` is a command that fetches the password (`pass show
# mail`, `gpg -d ...`), left alone, unless it only echoes one (`PassCmd "echo PW"`). msmtp's
# `passwordeval` likewise (an `echo PW` goes). (offlineimap's `remotepass = PW` is an
# assignment: see _CHOSEN_NAMES.) Found at the `A`/`S` of `IMAPAccount`/`IMAPStore` and at
# `password` of `passwordeval`, anchors scanned for already.
_MBSYNC_BLOCK = re.compile(r"IMAP(?:Account|Store)[ \t]+[^\r\n]*(?P<body>(?:\r?\n[ \t]*[^\s#][^\r\n]*|\r?\n[ \t]*#[^\r\n]*){1,40})")
_MBSYNC_PASS = re.compile(r"(?im)^([ \t]*Pass[ \t]+)(?:\"(?P<dq>[^\"\r\n]+)\"|(?P<uq>[^\s\"][^\r\n]*?))[ \t]*\r?$")
# An echo of a literal: `echo PW`, `echo -n 'PW'`, `printf %s PW`, the command in quotes or not.
_ECHO_LITERAL = r"[\"']?(?:echo|printf)[ \t]+(?:-[neE]+[ \t]+|%s[ \t]+|[\"']%s[\"'][ \t]+)?[\"']?(?P<s>[^\s\"'$`;|&]{4,})[\"']?[\"']?[ \t]*\r?$"
_MBSYNC_PASSCMD = re.compile(rf"(?im)^[ \t]*PassCmd[ \t]+{_ECHO_LITERAL}")
_PASSWORDEVAL = re.compile(rf"(?m)passwordeval[ \t]+{_ECHO_LITERAL}")
_MAIL_SYNC_MARK = marker("mail-password")


def _replace_mbsync_block(text: str, m: "re.Match[str]") -> Optional[str]:
    body = m.group("body")

    def pass_line(p: "re.Match[str]") -> str:
        group = "dq" if p.group("dq") is not None else "uq"
        if _is_placeholder(p.group(group)):
            return p.group(0)
        return p.group(0)[: p.start(group) - p.start()] + _MAIL_SYNC_MARK + p.group(0)[p.end(group) - p.start() :]

    def passcmd_line(p: "re.Match[str]") -> str:
        if _is_placeholder(p.group("s")):
            return p.group(0)
        return p.group(0)[: p.start("s") - p.start()] + _MAIL_SYNC_MARK + p.group(0)[p.end("s") - p.start() :]

    new_body = _MBSYNC_PASSCMD.sub(passcmd_line, _MBSYNC_PASS.sub(pass_line, body))
    return None if new_body == body else m.group(0)[: m.start("body") - m.start()] + new_body


def _replace_passwordeval(text: str, m: "re.Match[str]") -> Optional[str]:
    return None if _is_placeholder(m.group("s")) else _replace_group(text, m, "s", _MAIL_SYNC_MARK)


# --- PDF and hashing tools that take a password as a plain word: pdftk's `user_pw PW owner_pw PW`
# (`PROMPT` asks for it), qpdf's old `--encrypt USER OWNER 40|128|256` (the new syntax's
# `--user-password=PW` is an assignment), mkpasswd's `mkpasswd [-m METHOD] PW [SALT]` (`-s`
# reads stdin). At the `pw`, `-` and `passwd` anchors.
# (And `input_pw PW`, the password that opens an encrypted input.)
_PDFTK_PW = re.compile(r"(?:user|owner|input)_pw(?<![\w.-]user_pw)(?<![\w.-]owner_pw)(?<![\w.-]input_pw)[ \t]+(?P<s>[^\s\"'|;&\\]+)")
_QPDF_ENCRYPT = re.compile(r"-(?<=[ \t]-)-encrypt[ \t]+[\"']?(?P<u>[^\s\"'|;&\\]*)[\"']?[ \t]+[\"']?(?P<o>[^\s\"'|;&\\]*)[\"']?[ \t]+(?:40|128|256)(?![\w-])")
_MKPASSWD = re.compile(
    r"passwd(?<=mkpasswd)(?<![\w.-]mkpasswd)(?:[ \t]+(?:-[mSRP][ \t]*[^\s-]\S*|--(?:method|salt|rounds)[= \t][^\s-]\S*|-(?![mSRP])[a-zA-Z]+(?<!-s)))*"
    r"[ \t]+(?P<s>[^\s\"'|;&<>-][^\s\"'|;&<>\\]*)"
)
_PW_WORD_MARK = marker("cli-flag")
# wpa_passphrase's `wpa_passphrase SSID PASSPHRASE` (without the second word it reads stdin).
_WPA_PASSPHRASE = re.compile(
    r"passphrase(?<=wpa_passphrase)(?<![\w.-]wpa_passphrase)[ \t]+(?:\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'|;&<>\\]+)"
    r"[ \t]+(?P<w>\"[^\"\r\n]+\"|'[^'\r\n]+'|[^\s\"'|;&<>\\]+)"
)


def _replace_wpa_passphrase(text: str, m: "re.Match[str]") -> Optional[str]:
    marked = _mark_arg(m.group("w"), "")
    return None if marked is None else _replace_group(text, m, "w", marked)


def _replace_pw_words(text: str, m: "re.Match[str]") -> Optional[str]:
    out = m.group(0)
    for name in ("o", "u", "s"):  # (from the right, so that offsets hold)
        if name in m.re.groupindex and m.group(name) is not None and not _is_placeholder(m.group(name)) and m.group(name) != "PROMPT":
            a, b = m.start(name) - m.start(), m.end(name) - m.start()
            out = out[:a] + _PW_WORD_MARK + out[b:]
    return None if out == m.group(0) else out


def _replace_conf_password(text: str, m: "re.Match[str]") -> Optional[str]:
    group = next(g for g in ("s", "qs", "sqs") if m.start(g) >= 0)
    if _is_placeholder(m.group(group)):
        return None
    return _replace_group(text, m, group, _LDAP_MARK if m.group(0).lstrip(" \t").startswith(("bindpw", "rootpw")) else _REDIS_CONF_MARK)


# LDIF: `userPassword: {SSHA}...`, `userPassword:: <base64>`, Samba's NT and LM hashes, and
# cn=config's `olcRootPW: {SSHA}...` / `olcRootPW:: <base64>` (`::` is LDIF's base64 of the
# value: the password or its hash, encoded). A `{SCHEME}` value is a hash, and as guessable as a
# crypt(3) one; the scheme stays. (A plain `olcRootPW: pw` goes to the assignment rule first:
# its name ends in `rootpw`.)
_LDIF_PASSWORD = re.compile(
    r"(?m)(?:^|(?<=\\n))[ \t]*(?P<attr>userPassword|sambaNTPassword|sambaLMPassword|(?i:olcRootPW))::?[ \t]*(?P<scheme>\{[\w-]+\})?(?P<s>[^\s\\\"']+)"
)


# openssl's -passin/-passout/-pass `pass:PW`, cmdkey's `/pass:PW`, xfreerdp's `/p:PW`.
# (Only after a flag that takes it: prose ends sentences with "the forward pass:".)
_OPENSSL_PASS_AFTER = (
    r"(?:(?<=/pass:)|(?<=/password:)|(?<=-pass pass:)|(?<=-passin pass:)|(?<=-passout pass:)|(?<=-password pass:)|(?<=[ \t]/p:))"
)
# (A value stops at a backslash too: inside a JSON string, `\n` ends its line.)
_OPENSSL_PASS = re.compile(rf"(?:pass|/p):{_OPENSSL_PASS_AFTER}(?P<s>[^\s\"':\\][^\s\"'\\]*)")


# --- passwords that a program takes as a positional argument, not as a flag's value ---
# `htpasswd -b FILE USER PW`, `-bc`, `-nb USER PW` (no file with -n): -b says the password is on
# the command line; without it htpasswd prompts. (-C and -r take a number of their own.) Gated at
# the `-` of its first flag, right after the name: a substring test for `htpasswd` cost every text a scan.
# (A backslash only where it escapes no newline or quote: in a JSON string `\n` ends the line.)
_SHELL_WORD = r"(?:\"[^\"\r\n]*\"|'[^'\r\n]*'|(?:[^\s\"'`;|&<>()\\]|\\(?![nrt\"'\\]))+)"
_HTPASSWD = re.compile(
    r"(?:htpasswd|mosquitto_passwd)[ \t](?P<flags>-[A-Za-z]+(?:(?<=[Cr])[ \t]+[0-9]+)?(?:[ \t]+-[A-Za-z]+(?:(?<=[Cr])[ \t]+[0-9]+)?)*)"
    rf"[ \t]+(?P<a>{_SHELL_WORD})[ \t]+(?P<b>{_SHELL_WORD})(?:[ \t]+(?P<c>{_SHELL_WORD}))?"
)
_FLAG_LETTERS = re.compile(r"-([A-Za-z]+)")


def _replace_htpasswd(text: str, m: "re.Match[str]") -> Optional[str]:
    letters = "".join(_FLAG_LETTERS.findall(m.group("flags")))
    if "b" not in letters:
        return None
    group = "b" if "n" in letters else "c"
    new = _mark_arg(m.group(group), "") if m.group(group) is not None else None
    if new is None:
        return None
    return text[m.start() : m.start(group)] + new + text[m.end(group) : m.end()]


# Oracle's `sqlplus USER/PW[@DB]` (`sqlplus / as sysdba` and `sqlplus /nolog` name no user).
_SQLPLUS = re.compile(r"sqlplus(?:[ \t]+-[A-Za-z]+)*[ \t]+[\"']?[\w$#.]+/(?P<s>\"[^\"\r\n]+\"|[^\s@\"'/;|&\\]+)")
# The same `user/password@db` in Oracle's JDBC thin URLs (`jdbc:oracle:thin:scott/pw@//host:1521/svc`)
# and in the `userid=` of its loaders and Data Pump (`sqlldr userid=scott/pw`, `expdp userid=system/pw@db`).
_ORACLE_LOGON = re.compile(
    r"(?::(?<=oracle:thin:)|=(?<![\w.-]userid=)(?<=userid=))[\"']?[\w$#.]+/(?P<s>\"[^\"\r\n]+\"|[^\s@\"'/;|&\\]+)"
)
# Windows' `net use [X:] \\server\share PW [/user:NAME]` (a `*` prompts, a `/` starts an option).
# (The user may come first: `net use Z: \\\\srv\\share /user:CORP\\bob PW`.)
_NET_USE = re.compile(
    r"net use(?:[ \t]+(?:[A-Za-z]:|\*))?[ \t]+\\\\[^\s\"']+(?:[ \t]+/[Uu](?:[Ss][Ee][Rr])?:(?:[^\s\"'\\]|\\(?![nrt]))+)?[ \t]+(?P<s>[^\s/*\"'\\][^\s\"'\\]*)"
)


_GIT_SECRET_KEY = r"(?i:[\w-]+(?:\.[^\s=]+)?\.[\w-]*(?:token|pass|password|passwd|secret))"


# --- secrets that a program takes as a positional argument after a subcommand: one table ---
# `cargo login TOKEN`, `vault login TOKEN`, `bw unlock PW`, `bw login EMAIL PW`, `rabbitmqctl
# add_user USER PW`, `poetry config http-basic.REPO USER PW`, `nmcli dev wifi connect SSID password
# PW`, `pulumi config set --secret NAME VALUE`, `mc alias set ALIAS URL KEY SECRET`.
# Each entry: (program, the words that must come between it and the key word, in order (None: any
# words, nmcli's `device wifi connect SSID`), the key word (a regex), which positional word after
# the key word is the secret (0: the first), a flag the command must hold ("": none)). Flags may
# come anywhere; the ones in _POSITIONAL_VALUE_FLAGS take the next word as their value (`cargo
# login --registry NAME TOKEN`, `vault login -method github`), every other is taken for a switch.
#
# The rule is tried only at the key word, found through anchors the gates already scan for (`_`
# of `add_user`, `-` of `http-basic.`, `password`, `set`) or two of its own (`login`, `unlock`:
# a substring test each); the program is read back on the key word's line (_command_before).
_POSITIONAL_SECRETS: tuple[tuple[str, Optional[tuple[str, ...]], str, int, str], ...] = (
    ("cargo", (), "login", 0, ""),
    ("vault", (), "login", 0, ""),  # (`-method=userpass username=bob`: K=V words, no token)
    ("bw", (), "unlock", 0, ""),
    ("bw", (), "login", 1, ""),
    ("rabbitmqctl", (), "add_user|change_password|authenticate_user", 1, ""),
    ("poetry", ("config",), r"http-basic\.[^\s=]+", 1, ""),
    ("poetry", ("config",), r"pypi-token\.[^\s=]+", 0, ""),
    ("nmcli", None, "password|802-1x\\.password", 0, ""),
    ("nmcli", None, r"(?:wifi-sec|802-11-wireless-security)\.(?:psk|wep-key[0-3]|leap-password)", 0, ""),
    ("pulumi", ("config",), "set", 1, "--secret"),
    ("mc", ("alias",), "set", 3, ""),  # MinIO: mc alias set ALIAS URL ACCESS_KEY SECRET_KEY
    ("ngrok", ("config",), "add-authtoken", 0, ""),
    ("ngrok", (), "authtoken", 0, ""),
    ("wandb", (), "login", 0, ""),  # wandb login <40 hex>
    ("openssl", (), "passwd", 0, ""),  # openssl passwd -6 PW: hashes the password it is given
    ("composer", ("config",), r"http-basic\.[^\s=]+", 1, ""),  # composer config http-basic.REPO USER PW
    ("composer", ("config",), r"(?:github-oauth|gitlab-token)\.[^\s=]+", 0, ""),
    ("net", (), "user", 1, ""),  # Windows: net user NAME PW /add
    ("mysqladmin", None, "password", 0, ""),  # mysqladmin -u root password NEW_PW
    ("snyk", (), "auth", 0, ""),  # snyk auth TOKEN
    ("nuget", (), "setapikey", 0, ""),  # nuget setapikey KEY -Source URL
    ("neo4j-admin", None, "set-initial-password", 0, ""),  # neo4j-admin [dbms] set-initial-password PW
    # git config [--global] github.token T, hub.oauthtoken, sendemail.smtpPass, imap.pass (git 2.46's
    # `git config set NAME VALUE` too): a dotted key whose last part ends in a secret's word. (Not
    # `user.signingkey`: a key's id or path.)
    *(("git", path, _GIT_SECRET_KEY, 0, "") for path in (("config",), ("config", "set"))),
)
_POSITIONAL_VALUE_FLAGS: dict[str, frozenset[str]] = {
    "cargo": frozenset({"--registry", "--index", "--host", "--color", "--config", "-Z", "-C"}),
    # (Go flags: `-method` or `--method`, both looked up without their dashes.)
    "vault": frozenset({"method", "path", "address", "namespace", "ns", "format", "field", "ca-cert", "ca-path", "client-cert",
                        "client-key", "tls-server-name", "wrap-ttl", "mfa", "header", "policy-override", "agent-address"}),
    "bw": frozenset({"--method", "--code", "--passwordenv", "--passwordfile", "--session"}),
    "rabbitmqctl": frozenset({"-n", "--node", "-t", "--timeout", "-p", "--vhost"}),
    "poetry": frozenset({"-C", "--directory", "-P", "--project"}),
    "nmcli": frozenset({"-f", "--fields", "-m", "--mode", "-c", "--colors", "-e", "--escape", "-w", "--wait", "-g", "--get-values"}),
    "pulumi": frozenset({"-s", "--stack", "-C", "--cwd", "--config-file"}),
    "mc": frozenset({"--config-dir", "-C"}),
    "ngrok": frozenset({"--config", "--log", "--log-level", "--log-format"}),
    "wandb": frozenset({"--host", "--cloud"}),
    "openssl": frozenset({"-salt", "-in", "-table"}),
    "composer": frozenset({"-d", "--working-dir"}),
    "net": frozenset(),
    "mysqladmin": frozenset({"-u", "--user", "-h", "--host", "-P", "--port", "-S", "--socket", "-c", "--count", "-i", "--sleep",
                             "-O", "--defaults-file", "--defaults-extra-file"}),
    "snyk": frozenset(),
    "nuget": frozenset({"-Source", "-source", "-ConfigFile", "-configfile"}),
    "neo4j-admin": frozenset({"--expand-commands", "--verbose"}),
    "git": frozenset({"-C", "-c", "--file", "-f", "--blob", "--type", "--default", "--git-dir", "--work-tree", "--namespace",
                      "--comment", "--value"}),
}
_POSITIONAL_PROGRAMS = frozenset(entry[0] for entry in _POSITIONAL_SECRETS)
_POSITIONAL_KEYS = tuple((re.compile(entry[2]), entry) for entry in _POSITIONAL_SECRETS)
# Where the rule starts: at the anchor that its gate found in the key word (a literal first, so
# that a search of the whole text, once an earlier rule has changed it, scans for that literal),
# and the gate: (anchor, where the rule starts, look). The rest of the command follows: up to a
# line break (a JSON-escaped one too), `|`, `;`, `&`, a backtick, a bracket or a redirection. (A
# JSON string's closing quote: see _replace_positional.)
_POSITIONAL_REST = r"(?=[ \t])(?P<rest>(?:[^\r\n|;&`()<>\\]|\\(?![nr]))*)"
_POSITIONAL_GATES = (
    ("login", r"login(?<![\w.-]login)", r"(?<![\w.-]login)(?=[ \t])"),
    # (`net user` at the `net use` anchor of the net-use rule: no anchor of its own.)
    ("net use", r"net(?<![\w.-]net)[ \t](?P<key>user)", r"(?<![\w.-]net use)(?=r[ \t])"),
    # (`bw unlock` at the `b` that the bearer and basic gates scan for: an `unlock` anchor cost 1%.)
    ("b", r"bw(?<![\w.-]bw)[ \t]+(?:-[\w-]+[ \t]+){0,4}(?P<key>unlock)", r"(?<![\w.-]b)(?=w[ \t]+(?:-[\w-]+[ \t]+){0,4}unlock[ \t])"),
    # (At the program: a branch for `add_user` at the `_` gate cost every `_` of snake_case more
    # than this long needle's substring test.)
    (
        "rabbitmqctl",
        r"rabbitmqctl(?:\.bat)?[ \t]+(?:-[\w-]+[ \t]+(?:[^\s-]\S*[ \t]+)??){0,6}?(?P<key>add_user|change_password|authenticate_user)",
        r"(?=(?:\.bat)?[ \t])",
    ),
    (
        "-",
        r"-(?:(?<=http-|pypi-|wifi-|less-)|(?<=ithub-|itlab-))(?:basic|token|sec|security|oauth)\.[\w.-]*",
        r"(?:(?<=http-|pypi-|wifi-|less-)|(?<=ithub-|itlab-))(?=(?:basic|token|sec|security|oauth)\.[\w.-]*[ \t])",
    ),
    ("passwd", r"passwd(?<=[ \t]passwd)", r"(?<=[ \t]passwd)(?=[ \t])"),
    ("password", r"password(?<=[\s.\"']password)", r"(?<=[\s.\"']password)(?=[ \t])"),
    ("token", r"token(?<=[\s-]authtoken)", r"(?<=[\s-]authtoken)(?=[ \t])"),
    # (`snyk auth`, `nuget setapikey`, `neo4j-admin set-initial-password`: at anchors scanned for already.)
    ("auth", r"auth(?<=[ \t]auth)(?=[ \t]+[^\s-])", r"(?<=[ \t]auth)(?=[ \t]+[^\s-])"),
    ("key", r"key(?<=[ \t]setapikey)", r"(?<=[ \t]setapikey)(?=[ \t])"),
    ("password", r"password(?<=[ \t]set-initial-password)", r"(?<=[ \t]set-initial-password)(?=[ \t])"),
    # (git config's keys: `github.token`, `hub.oauthtoken`, `sendemail.smtpPass`; `x.password` is the gate above's.)
    *((w, rf"{w}(?<=[.a-z]{w})(?=[ \t]+[^\s-])", rf"(?<=[.a-z]{w})(?=[ \t]+[^\s-])") for w in ("token", "Token", "pass", "Pass", "secret", "Secret", "Password")),
    # (`pulumi config set`, `mc alias set`: prose and code say " set " all the time.)
    ("set", r"set(?:(?<=[ \t]config[ \t]set)|(?<=[ \t]alias[ \t]set))", r"(?:(?<=[ \t]config[ \t]set)|(?<=[ \t]alias[ \t]set))(?=[ \t])"),
)
# One shell word of it: quoted (`\"...\"` inside a JSON string), or bare, or both glued.
_ARG_WORD = re.compile(r"(?:\\\"(?:[^\"\\]|\\[^\"])*\\\"|\"[^\"]*\"|'[^']*'|[^\s\"'\\]+|\\(?![nrt\"]))+")
_STRING_CLOSE = re.compile(r'\\*"(?=[ \t]*(?:[,}\]:]|\Z))')


def _key_head(before: str) -> str:
    """The end of `before` after its last white space or quote: the part of a key word before the
    match. (As a regex, `[^\\s"'`]*\\Z` searched `before` from each of its positions: ~0.3 ms at
    every `password` of a long line.)"""
    i = len(before)
    while i and not before[i - 1].isspace() and before[i - 1] not in "\"'`":
        i -= 1
    return before[i:]


_PROSE_WORDS = re.compile(r"[A-Za-z][a-z]*(?:[ \t]+[A-Za-z][a-z]*){2}")


def _command_text(text: str, pos: int) -> str:
    """The command that `pos` sits in, up to `pos` (after the last `|`, `;`, `&&`, `(` or
    backtick on its line, and a diff's `+`/`-` opening it)."""
    prefix = _line_prefix(text, pos)
    prefix = prefix[_diff_marker(prefix, 0) :]
    cut = _COMMAND_BREAK.match(prefix)
    return prefix[cut.end() :] if cut else prefix


def _command_before(text: str, pos: int) -> list[str]:
    """The words of the command that `pos` sits in, before `pos`."""
    return _command_text(text, pos).split()


def _positional_args(program: str, words: list[str]) -> list[int]:
    """The indexes of the positional words among `words`, a command's words after its program:
    the flags and their values left out."""
    value_flags = _POSITIONAL_VALUE_FLAGS.get(program, frozenset())
    go = program == "vault"
    out, i, flags_over = [], 0, False
    while i < len(words):
        word = words[i].strip("\"'")
        if not flags_over and word == "--":
            flags_over = True
        elif not flags_over and word.startswith("-") and len(word) > 1:
            if "=" not in word and (word.lstrip("-") if go else word) in value_flags:
                i += 1  # its value
        elif program == "net" and word.startswith("/"):
            pass  # Windows switches: net user bob /add
        elif not (program == "cargo" and word.startswith("+")):  # cargo +nightly login
            out.append(i)
        i += 1
    return out


def _replace_positional(text: str, m: "re.Match[str]") -> Optional[str]:
    if "key" in m.re.groupindex:  # the match starts at the program (`bw unlock`)
        before, key_start, key = _line_prefix(text, m.start()), m.start("key"), m.group("key")
    else:  # at the key word or inside it (`add_user`: at its `_`)
        before = _line_prefix(text, m.start())
        head = _key_head(before)
        key_start = m.start() - len(head)
        key = head + text[m.start() : m.start("rest")]
    entries = [entry for pattern, entry in _POSITIONAL_KEYS if pattern.fullmatch(key)]
    if not entries:
        return None
    command_text = _command_text(text, key_start)
    # (A program word holds its program's name: the entries whose program the command does not
    # even spell are dropped before its words are read one by one, which at every `password` of a
    # long line cost ~0.5 ms: 35 s for a MB of `password <- "`.)
    entries = [entry for entry in entries if entry[0] in command_text]
    if not entries:
        return None
    command = command_text.split()
    # A string that closes (`{"command": "bw unlock pw", ...}`, `\\", \\"next\\"` a level down) ends the command.
    close = _STRING_CLOSE.search(text, m.start("rest"), m.end())
    rest_end = close.start() if close else m.end()
    rest = [(w.group(), w.start(), w.end()) for w in _ARG_WORD.finditer(text, m.start("rest"), rest_end)]
    for program, path, _, index, needs in entries:
        at = next((i for i in range(len(command) - 1, -1, -1)
                   if _program_of(command[i]).removesuffix(".bat").removesuffix(".cmd") == program), None)
        if at is None:
            continue
        between = [command[at + 1 + j] for j in _positional_args(program, command[at + 1 :])]
        if path is not None and between != list(path):
            continue
        if needs and not any(w.strip("\"'") == needs for w in command[at + 1 :] + [w for w, _, _ in rest]):
            continue
        positional = _positional_args(program, [w for w, _, _ in rest])
        if index >= len(positional):
            continue
        word, start, end = rest[positional[index]]
        if program == "vault" and "=" in word:
            continue
        if _PROSE_WORDS.match(" ".join(rest[j][0] for j in positional)):
            continue  # "cargo login is how you log in", "rabbitmqctl add_user creates a user"
        escaped = word.startswith('\\"') and word.endswith('\\"') and len(word) > 4  # `\\"my pw\\"` in a JSON string
        if escaped:
            new = None if _is_placeholder(word[2:-2]) else '\\"' + _CLI_MARK + '\\"'
        else:
            new = _mark_arg(word, "")
        if new is None:
            continue
        return text[m.start() : start] + new + text[end : m.end()]
    return None


# --- `AUTH` commands: Redis's `AUTH [USER] PW` typed at redis-cli's prompt (`127.0.0.1:6379> auth
# pw`, any case there) or sent by a script (`echo "AUTH pw" | redis-cli`, `redis-cli AUTH pw`), and
# SASL in SMTP transcripts (`openssl s_client -starttls smtp`, smtplib's debug output): `AUTH PLAIN
# <base64 of \0user\0pw>`, `AUTH XOAUTH2 <base64 holding a bearer token>`, and after `AUTH LOGIN`
# (or a bare `AUTH PLAIN`) the line that answers the server's `334 UGFzc3dvcmQ6` ("Password:" in
# base64; `334 ` with nothing for PLAIN). The user name (`AUTH default pw`, LOGIN's first line) stays.
# Upper-case `AUTH` only where a command starts (a line, a prompt's `>`, a quote, `redis-cli`'s
# words, a transcript's `C:`), with at most two words after it: prose says "the AUTH command
# takes a password", and a server's `250-AUTH PLAIN LOGIN` lists mechanisms.
_NL = r"(?:\r?\n|\\r\\n|\\n)"
_LINE_CHAR = r"(?:[^\r\n\\]|\\(?![rn]))"
_AUTH_ARG = r"[^\s\"'`;|&\\]+"
# (After `AUTH` at a command's start, or `auth` in any case after a prompt's `host:6379>`.)
_AUTH_ARGS = (
    r"[ \t]+(?:"
    rf"(?P<mech>LOGIN|PLAIN|login|plain)(?:[ \t]+{_AUTH_ARG})?[ \t]*{_NL}(?:{_LINE_CHAR}*{_NL}){{0,6}}?{_LINE_CHAR}*?"
    rf"334(?:[ \t]+[Uc]GFzc3dvcmQ6|[ \t]*(?={_NL})){_LINE_CHAR}*{_NL}(?:{_LINE_CHAR}*GFzc3dvcmQ6{_LINE_CHAR}*{_NL})?"
    r"[ \t]*(?:(?:C:|send:)[ \t]*b?[\"']?)?(?P<pw>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])"
    rf"|(?P<a>{_AUTH_ARG})(?:[ \t]+(?P<b>{_AUTH_ARG}))?[ \t]*(?=[\r\n\"'`;|&)]|\\[rn]|\Z))"
)
_AUTH_AT = re.compile(r"(?:^|[>\"'`(;|&]|(?:^|[\s/\"'])redis-cli(?:\.exe)?[ \t].*|^[ \t]*C:)[ \t]*\Z")
# SASL mechanisms whose first message holds the secret; the others' (LOGIN: the user name;
# CRAM-MD5, SCRAM: a challenge's answer) do not.
_SASL_SECRET_FIRST = frozenset({"PLAIN", "XOAUTH2", "OAUTHBEARER"})
_SASL_OTHERS = frozenset({"LOGIN", "CRAM-MD5", "DIGEST-MD5", "GSSAPI", "NTLM", "EXTERNAL", "ANONYMOUS"})
_SASL_MARK, _REDIS_MARK = marker("sasl-credentials"), marker("redis-password")


def _replace_auth_command(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.group(0)[0] == "A" and not _AUTH_AT.search(_line_prefix(text, m.start())):
        return None
    if m.group("pw") is not None:
        return None if _is_placeholder(m.group("pw")) else _replace_group(text, m, "pw", _SASL_MARK)
    a, b = m.group("a"), m.group("b")
    mech = a.upper()
    if mech in _SASL_SECRET_FIRST or mech in _SASL_OTHERS or mech.startswith("SCRAM-"):
        if mech not in _SASL_SECRET_FIRST or b is None or _is_placeholder(b):
            return None
        return _replace_group(text, m, "b", _SASL_MARK)
    group = "a" if b is None else "b"
    return None if _is_placeholder(m.group(group)) else _replace_group(text, m, group, _REDIS_MARK)


# SQL that sets a password: PostgreSQL's `CREATE USER bob WITH PASSWORD 'x'`, `ALTER ROLE bob
# ENCRYPTED PASSWORD 'x'`; MySQL's, MariaDB's and Oracle's `IDENTIFIED BY 'x'` (`IDENTIFIED WITH
# mysql_native_password BY 'x'`, Oracle's "x" and bare `IDENTIFIED BY tiger`). Setup scripts,
# migrations and `docker-entrypoint-initdb.d` files hold these. (A bare word only after upper-case
# IDENTIFIED BY: prose says "the bug identified by the tests".)
_SQL_PASSWORD = re.compile(
    # (MySQL's `SET PASSWORD FOR 'bob'@'%' = PASSWORD('pw')`, `SELECT PASSWORD('pw')`: the function's argument.)
    # (Not a method's: `keyring.get_password('service', 'user')` names no password.)
    # (MySQL 5.7's `SET PASSWORD FOR 'bob'@'%' = 'pw'` too: the literal after the account and `=`.)
    r"(?:(?:PASSWORD|password)(?:[ \t]+N?|\((?<![\w.]PASSWORD\()(?<![\w.]password\()(?=[^)\r\n]*\))"
    # (A backslash escapes in MySQL's strings, `'a\'b'`, and is a character in others', `'a\b'`: read
    # to the first backslash, the literal was no match and the password stayed whole.)
    r"|[ \t]+(?:FOR|for)[ \t]+[^=\r\n;]{1,100}?=[ \t]*)'(?P<sq>(?:[^'\\\r\n]|''|\\[^\r\n])+)'"
    r"|(?:IDENTIFIED(?P<upper>)|identified)(?:[ \t]+(?:WITH|with)[ \t]+[\w\"'`]+)?[ \t]+(?:BY|by)[ \t]+(?:(?:VALUES|PASSWORD)[ \t]+)?"
    r"(?:'(?P<bq>(?:[^'\\\r\n]|''|\\[^\r\n])+)'|\"(?P<dq>[^\"\\\r\n]+)\"|(?(upper)(?P<uq>[^\s'\";,)\\]+))))"
)
_SQL_PASSWORD_MARK = marker("sql-password")
# Cloud credentials in SQL, a keyword and a literal with no `=`: Redshift's `COPY ... ACCESS_KEY_ID
# 'AKIA...' SECRET_ACCESS_KEY 'k' SESSION_TOKEN 't'`, DuckDB's `CREATE SECRET (TYPE S3, KEY_ID 'x',
# SECRET 'k')`.
# (After DROP, CREATE or ALTER the quoted word names a secret: `DROP SECRET 'name'`.)
_SQL_SECRET = re.compile(r"S(?<![\w]S)(?<!DROP S)(?<!EATE S)(?<!LTER S)(?:ECRET(?:_ACCESS_KEY)?|ESSION_TOKEN)[ \t]+'(?P<s>(?:[^'\\\r\n]|''){4,})'")


def _replace_sql_password(text: str, m: "re.Match[str]") -> Optional[str]:
    group = next((g for g in ("sq", "bq", "dq", "uq") if m.start(g) >= 0), None)
    if group is None or _is_placeholder(m.group(group)) or m.group(group) in ("VALUES", "PASSWORD"):
        return None
    return _replace_group(text, m, group, _SQL_PASSWORD_MARK)


# SQL that stores a secret in a column: `INSERT INTO users (name, password) VALUES ('bob', 'x')`,
# several rows too (`VALUES ('a', 'x'), ('b', 'y')`), the literal inside a call (`crypt('x',
# gen_salt('bf'))`), `REPLACE`/`UPSERT INTO`, and `INSERT INTO t (a, b) SELECT 'x', 'y'`. The column
# list names the secret, the row holds it by position; a column whose name says secret
# (`password`, `api_token`, `client_secret`) loses its literal, the others and a placeholder (`?`,
# `$2`, `%s`, `:password`) stay. (UPDATE's `SET password = 'x'` is an assignment.) Possessive
# throughout, and two levels of brackets in a row: each `VALUES` reads its rows once.
_SQL_LIT = r"""(?:[NnEe]?'(?:[^'\\\r\n]|''|\\.)*+'|\\?"(?:[^"\\\r\n]|""|\\(?!"))*+\\?")"""
_SQL_ROW_ITEM = rf"""[^()'"]++|{_SQL_LIT}"""
_SQL_ROW = rf"""\((?:{_SQL_ROW_ITEM}|\((?:{_SQL_ROW_ITEM}|\((?:{_SQL_ROW_ITEM})*+\))*+\))*+\)"""
_SQL_INSERT = re.compile(rf"(?:VALUES|values|Values)\s*+(?P<rows>{_SQL_ROW}(?:\s*+,\s*+{_SQL_ROW})*+)")
# (SELECT's list ends at FROM, WHERE, a `;` or the line's end.)
_SQL_SELECT_ITEM = r"""(?:(?!(?i:from|where|union|returning|limit|order)\b)[^()'";\r\n])++"""
_SQL_INSERT_SELECT = re.compile(
    rf"""(?<=[\s)])(?:SELECT|select|Select)[ \t]++(?P<rows>(?:{_SQL_SELECT_ITEM}|{_SQL_LIT}|\((?:{_SQL_ROW_ITEM}|\((?:{_SQL_ROW_ITEM})*+\))*+\))++)"""
)
_SQL_ROW_TOKEN = re.compile(rf"""{_SQL_LIT}|[(),]|[^()'",\\]+|\\""")
_SQL_INSERT_HEAD = re.compile(
    r"(?i:insert|replace|upsert)(?:[ \t\r\n]+(?i:ignore|or[ \t]+\w+))?(?:[ \t\r\n]+(?i:into))?[ \t\r\n]+[^\s;()'][^;()']*"
)
_SQL_INSERT_WORDS = ("INSERT", "insert", "Insert", "REPLACE", "replace", "Replace", "UPSERT", "upsert", "Upsert")
# How far before `VALUES` the column list and the `INSERT INTO t` before it are looked for.
_SQL_COLUMNS_REACH, _SQL_HEAD_REACH = 2000, 200


def _sql_insert_columns(text: str, values_at: int) -> Optional[list[str]]:
    """The column list of the `INSERT INTO t (a, b)` right before `values_at`, names unquoted;
    with no list (`INSERT INTO t VALUES (...)`, pg_dump's `--inserts`, mysqldump), the columns of
    `CREATE TABLE t (...)` earlier in the text."""
    close = values_at - 1
    while close >= 0 and values_at - close < 100 and text[close].isspace():
        close -= 1
    if close < 0:
        return None
    if text[close] != ")":
        return _created_table_columns(text, close + 1)
    open_ = text.rfind("(", max(0, close - _SQL_COLUMNS_REACH), close)
    if open_ < 0 or ")" in text[open_ + 1 : close]:
        return None
    head = text[max(0, open_ - _SQL_HEAD_REACH) : open_]
    insert = max(head.rfind(word) for word in _SQL_INSERT_WORDS)
    if insert < 0 or not _SQL_INSERT_HEAD.fullmatch(head.rstrip(), insert):
        return None
    return [c.strip().strip("`\"[]'\\").rsplit(".", 1)[-1].strip("`\"[]'\\") for c in text[open_ + 1 : close].split(",")]


# `INSERT INTO t VALUES` with no column list: the table's name, and its `CREATE TABLE` (the name
# as written, quoted or schema-qualified or not: `public.users`, `` `users` ``, `"users"`). A
# definition's items are its columns, each a name first, but for its constraints.
_SQL_INSERT_TABLE = re.compile(
    r"(?i:insert|replace)(?:[ \t\r\n]+(?i:ignore|or[ \t]+\w+))?[ \t\r\n]+(?i:into)[ \t\r\n]+(?P<table>[\w.`\"\[\]]{1,200})[ \t\r\n]*\Z"
)
_SQL_CONSTRAINT_WORDS = frozenset("primary unique constraint foreign check key index fulltext spatial exclude like period".split())


def _table_name(written: str) -> str:
    return written.rsplit(".", 1)[-1].strip("`\"[]").lower()


def _created_table_columns(text: str, head_end: int) -> Optional[list[str]]:
    """The columns of the table that the `INSERT INTO t` ending at `head_end` fills, as the text's
    `CREATE TABLE t (...)` before it defines them; None if it does not."""
    head = _SQL_INSERT_TABLE.search(text, max(0, head_end - _SQL_HEAD_REACH), head_end)
    if head is None:
        return None
    # (The last definition before the INSERT: a table dropped and created again.)
    starts, definitions = _created_tables(text).get(_table_name(head.group("table")), ([], []))
    before = bisect.bisect_left(starts, head.start())
    return definitions[before - 1] if before else None


@functools.lru_cache(maxsize=8)  # (a dump's thousands of INSERTs read its CREATE TABLEs once)
def _created_tables(text: str) -> dict[str, tuple[list[int], list[list[str]]]]:
    """Each table that `text` creates: where each definition starts, in order, and its columns."""
    tables: dict[str, tuple[list[int], list[list[str]]]] = {}
    if "table" not in text and "TABLE" not in text and "Table" not in text:
        return tables
    for create in _SQL_CREATE_TABLE.finditer(text):
        columns = []
        for item in _top_level_items(create.group("body")):
            words = item.split(None, 1)
            if words and words[0].lower() not in _SQL_CONSTRAINT_WORDS:
                columns.append(words[0].strip("`\"[]"))
        starts, definitions = tables.setdefault(_table_name(create.group("table")), ([], []))
        starts.append(create.start())
        definitions.append(columns)
    return tables


_SQL_CREATE_TABLE = re.compile(
    r"(?i:create)[ \t\r\n]+(?:(?i:temp|temporary|unlogged)[ \t\r\n]+)?(?i:table)[ \t\r\n]+(?:(?i:if[ \t]+not[ \t]+exists)[ \t\r\n]+)?"
    r"(?P<table>[\w.`\"\[\]]{1,200})[ \t\r\n]*\((?P<body>(?:[^()'\"]++|'[^'\r\n]*'|\"[^\"\r\n]*\"|\((?:[^()]|\([^()]*\))*\))*+)\)"
)


def _top_level_items(body: str) -> list[str]:
    """`body` cut at the commas outside brackets and quotes (`numeric(10, 2)` stays one item)."""
    items, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(body):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    items.append(body[start:].strip())
    return items


def _replace_sql_insert(text: str, m: "re.Match[str]") -> Optional[str]:
    return _mark_sql_rows(text, m, 1)


def _replace_sql_insert_select(text: str, m: "re.Match[str]") -> Optional[str]:
    return _mark_sql_rows(text, m, 0)


def _mark_sql_rows(text: str, m: "re.Match[str]", row_depth: int) -> Optional[str]:
    """The literals of `m`'s rows under a secret's column marked; a row's items sit at
    `row_depth` brackets (VALUES' rows are bracketed, SELECT's list is not)."""
    columns = _sql_insert_columns(text, m.start())
    if not columns or not any(_name_kind(c) or c == "pass" for c in columns):
        return None
    out, copied, depth, item, taken = [], m.start(), 0, 0, False
    for token in _SQL_ROW_TOKEN.finditer(text, m.start("rows"), m.end()):
        t = token.group(0)
        if t == "(":
            depth += 1
            if depth == row_depth:
                item, taken = 0, False
        elif t == ")":
            depth -= 1
        elif t == "," and depth == row_depth:
            item, taken = item + 1, False
        elif depth >= row_depth and not taken and item < len(columns) and t[-1] in "'\"":
            taken = True  # (the item's first literal: `crypt('x', gen_salt('bf'))` keeps 'bf')
            quote = 2 if t.startswith("\\") else 1
            start = token.start() + t.index(t[-1]) + 1 if quote == 1 else token.start() + 2
            end = token.end() - quote
            value = text[start:end]
            if start < end and _named_mark(columns[item], value):
                out.append(text[copied:start])
                out.append(_SQL_PASSWORD_MARK)
                copied = end
    if not out:
        return None
    out.append(text[copied : m.end()])
    return "".join(out)


# A secret column set or compared to what a hashing or encrypting function makes of a literal:
# `UPDATE users SET password = crypt('x', gen_salt('bf'))`, `SET password = MD5('x')`, `WHERE
# passwd = SHA2('x', 256)`, `SET api_key = pgp_sym_encrypt('x', 'k')`, T-SQL's `HASHBYTES('SHA2_256',
# 'x')`. Every literal of the call goes but an algorithm's or an encoding's name and a number
# (`gen_salt('bf')`, `'sha256'`, `'hex'` stay); the name before `=` must say secret.
_SQL_HASH_FUNCTIONS = (
    r"(?i:crypt|md5|sha1|sha2|sha|sha256|sha512|encrypt|aes_encrypt|des_encrypt|old_password|pgp_sym_encrypt"
    r"|digest|hmac|hashbytes|pwdencrypt|encode)"
)
# (Found at a secret's word in the name, anchors scanned for already: a look at every `=` of
# ordinary code cost the whole text pass 2%.)
_SQL_HASHED_WORDS = ("password", "Password", "PASSWORD", "passwd", "pass", "Pass", "PASS", "pw", "PW",
                     "secret", "Secret", "token", "Token", "key", "Key")
_SQL_HASHED_LOOK = rf"(?=\w*[`\"\]]?[ \t]*=(?![=>])[ \t]*{_SQL_HASH_FUNCTIONS}[ \t]*\()"
_SQL_HASHED = re.compile(
    rf"(?:{'|'.join(_SQL_HASHED_WORDS)}){_SQL_HASHED_LOOK}\w*[`\"\]]?[ \t]*=[ \t]*\w+[ \t]*(?P<args>{_SQL_ROW})"
)
_SQL_ALGORITHM = re.compile(
    r"(?i:md[45]|sha-?\d*|sha2_\d+|bf|des|xdes|aes\d*|aes-\d+(?:-\w+)?|blowfish|hex|base64|escape|utf-?8|(?:cipher-algo|compress-algo)=\w+)|\d+"
)
_SQL_ARG_LITERAL = re.compile(r"[NnEe]?'(?P<s>(?:[^'\\\r\n]|''|\\.)*+)'")


# (A column that keeps a secret hashed: `password_hash`, `pwd_digest`, `token_sha256`. Its own
# value is no secret, but the literal a hashing call there is handed is.)
_HASHED_SECRET_NAME = re.compile(r"(?:password|passwd|pwd|pass|secret|token)(?:hash|digest|crypt|encrypted|enc|sha\d*|md5)")


def _names_hashed_secret(name: str) -> bool:
    return bool(_HASHED_SECRET_NAME.search(_normalize_name(name)))


def _replace_sql_hashed(text: str, m: "re.Match[str]") -> Optional[str]:
    name_end = text.index("=", m.start())
    while name_end > 0 and text[name_end - 1] in " \t`\"]":
        name_end -= 1
    name = text[_name_start(text, name_end) : name_end]
    if not name or not (_name_kind(name) or _names_hashed_secret(name)):
        return None
    out, copied = [], m.start()
    for lit in _SQL_ARG_LITERAL.finditer(text, m.start("args"), m.end("args")):
        value = lit.group("s")
        if value and not _SQL_ALGORITHM.fullmatch(value) and not _is_placeholder(value):
            out.append(text[copied : lit.start("s")])
            out.append(_SQL_PASSWORD_MARK)
            copied = lit.end("s")
    if not out:
        return None
    out.append(text[copied : m.end()])
    return "".join(out)


# pg_dump's data: `COPY public.users (id, email, password) FROM stdin;`, then one row a line, its
# fields cut by tabs, up to `\.`. A field under a secret's column goes (`\N`, SQL's NULL, stays).
_SQL_COPY = re.compile(
    r"COPY[ \t]+[^\s(;]+[ \t]*\((?P<cols>[^()\r\n]{1,2000})\)[ \t]+FROM[ \t]+(?:stdin|STDIN)[ \t]*;?[ \t]*\r?\n"
    r"(?P<rows>(?:(?!\\\.(?:\r?\n|\Z))[^\n]*+\n)*+)"
)


def _replace_sql_copy(text: str, m: "re.Match[str]") -> Optional[str]:
    columns = [c.strip().strip('"`') for c in m.group("cols").split(",")]
    secret = [i for i, c in enumerate(columns) if _name_kind(c) or c == "pass"]
    if not secret:
        return None
    rows, changed = m.group("rows").split("\n"), False
    for r, row in enumerate(rows):
        fields = row.split("\t")
        for i in secret:
            if i < len(fields) and fields[i].rstrip("\r") not in ("", "\\N") and _named_mark(columns[i], fields[i].rstrip("\r")):
                fields[i] = _SQL_PASSWORD_MARK + ("\r" if fields[i].endswith("\r") else "")
                changed = True
        rows[r] = "\t".join(fields)
    if not changed:
        return None
    return text[m.start() : m.start("rows")] + "\n".join(rows) + text[m.end("rows") : m.end()]


# A Kubernetes Secret as YAML (`kubectl get secret x -o yaml`, a manifest): every value under
# `data:` (base64) and `stringData:` (plain text) is a secret whatever its key is called
# (`DATABASE_URL`, `config.json`, `.env`), and base64 hides it from every other rule. The keys
# stay, the values go, and a block scalar's lines (`config.yaml: |`) go as one. The document
# must say `kind: Secret`, before the block (a manifest) or after it (kubectl sorts `data`
# before `kind`), with no `---` and no other `kind:` between; a ConfigMap's data stays.
_K8S_NOT_BETWEEN = r"(?!---|[ \t-]*kind:)"
_K8S_KIND = r"[ \t-]*kind:[ \t]*[\"']?Secret[\"']?[ \t]*\r?"
_K8S_SECRET = re.compile(
    rf"(?m)(?P<kind>^{_K8S_KIND}\n(?:{_K8S_NOT_BETWEEN}[^\n]*\n){{0,40}}?)?"
    r"^(?P<indent>[ \t-]*)(?:data|stringData):[ \t]*\r?\n"
    r"(?P<body>(?:(?P=indent)[ \t]+[^\s][^\n]*(?:\n|\Z))+)"
    rf"(?(kind)|(?=(?:{_K8S_NOT_BETWEEN}[^\n]*\n){{0,40}}?{_K8S_KIND}$))"
)
_K8S_ENTRY = re.compile(r"(?P<key>[^\s:#][^:]*:)(?P<gap>[ \t]*)(?P<value>[^\r\n]*)")
_K8S_MARK = marker("kubernetes-secret")


def _replace_k8s_secret(text: str, m: "re.Match[str]") -> Optional[str]:
    lines = m.group("body").splitlines(keepends=True)
    key_indent = len(lines[0]) - len(lines[0].lstrip(" \t"))
    out, marked, in_block = [], 0, False
    for line in lines:
        content = line.lstrip(" \t")
        indent = line[: len(line) - len(content)]
        bare = content.rstrip("\r\n")
        ending = content[len(bare) :]
        if len(indent) > key_indent:  # a block scalar's line: the file it holds goes, once
            if not in_block:
                out.append(indent + _K8S_MARK + ending)
                marked += 1
            in_block = True
            continue
        in_block = False
        entry = _K8S_ENTRY.match(bare)
        value = entry.group("value").strip() if entry else ""
        if entry is None or not value or value in ("|", ">", "|-", ">-", "|+", ">+") or _is_placeholder(value.strip("\"'")):
            out.append(line)
            continue
        out.append(indent + entry.group("key") + entry.group("gap") + _K8S_MARK + ending)
        marked += 1
    if not marked:
        return None
    return text[m.start() : m.start("body")] + "".join(out)


def _replace_base64_pem(text: str, m: "re.Match[str]") -> Optional[str]:
    """A base64-encoded PEM block (kubeconfig `client-key-data`, a Kubernetes TLS secret's
    `tls.key`): a private key goes, a certificate stays."""
    head = m.group(0)[:64]
    try:
        decoded = binascii.a2b_base64(head[: len(head) // 4 * 4])
    except (binascii.Error, ValueError):
        return None
    return _PRIVATE_KEY_MARK if b"PRIVATE KEY" in decoded else None


def _replace_docker_config(text: str, m: "re.Match[str]") -> Optional[str]:
    """A base64 docker config (`.dockerconfigjson: eyJhdXRocyI6...`) holds registry passwords."""
    return marker("docker-auth")


def _shape(kind: str, pattern: str, *gates: tuple[str, str]) -> _Rule:
    """A token whose prefix varies in width: its own left boundary, then the whole match goes.

    The boundary, a leading `(?<![...])`, also holds after an escaped `\\n`, `\\r` or `\\t`."""
    pattern = re.sub(r"^\(\?<!\[([^\]]*)\]\)", lambda m: f"(?:(?<![{m.group(1)}])|(?<=\\\\[nrt]))", pattern)
    return _Rule(kind, re.compile(pattern), _whole(kind), gates)


# Tokens with a fixed prefix that rarely appears otherwise, each gated by its prefix as a
# (multi-character) anchor: a substring test per text, then nothing unless it is there.
_MORE_TOKENS: tuple[_Rule, ...] = (
    _shape("telegram-bot-token", r"(?<![0-9])[0-9]{5,12}:AA[A-Za-z0-9_-]{33}(?![A-Za-z0-9_-])", (":", r"(?<=[0-9]:)(?=AA)")),
    # (A digit in the first part, base64 of a numeric id: `NotificationServiceFactory.create.build...`
    # has the same shape.)
    _shape("discord-bot-token", r"(?<![A-Za-z0-9_.-])[MNO](?=[A-Za-z0-9_-]{0,26}[0-9])[A-Za-z0-9_-]{22,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}(?![A-Za-z0-9_-])",
           (".", r"(?<=[A-Za-z0-9_-]{23}\.)(?=[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27})")),
    _shape("mailchimp-key", r"(?<![A-Za-z0-9])[0-9a-f]{32}-us[0-9]{1,2}(?![A-Za-z0-9])", ("-", r"(?<=[0-9a-f]{32}-)(?=us[0-9])")),
    _token("mailgun-key", "key-", r"(?=[a-z0-9]*[0-9])[a-z0-9]{32}(?![A-Za-z0-9])", ("-", r"(?<=key-)(?=[a-z0-9]{32})")),
    _token("square-token", r"sq0(?:atp|csp)-", r"[0-9A-Za-z_-]{22,43}(?![A-Za-z0-9_-])", ("-", "(?:(?<=sq0atp-)|(?<=sq0csp-))")),
    _token("square-token", "EAAA", r"[A-Za-z0-9_-]{60}(?![A-Za-z0-9_-])", ("A", r"(?<=EA)(?=AA[A-Za-z0-9_-]{60})")),
    _token("facebook-token", "EAA", r"(?!A)(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{90,}", ("A", r"(?<=EA)(?=A[A-Za-z0-9]{90})")),
    _token("heroku-key", "HRKU-", r"[0-9A-Za-z_-]{40,}", ("-", "(?<=HRKU-)")),
    _shape("azure-ad-client-secret", r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])",
           ("~", r"(?<=[0-9]Q~)")),
    _token("databricks-token", "dapi", r"[a-f0-9]{32}(?:-[0-9]+)?(?![A-Za-z0-9])", ("dapi", "(?=[a-f0-9]{32})")),
    _shape("vault-token", r"(?<![A-Za-z0-9_.-])hv[sbr]\.[A-Za-z0-9_-]{24,}", (".", r"(?<=hv[sbr]\.)")),
    # (A service token names its config: `dp.st.dev.xxxx`, `dp.st.prd_eu.xxxx`.)
    _token("doppler-token", r"dp\.", r"(?:pt|st|sa|ct|scim|audit)\.(?:[a-z0-9_-]{1,40}\.)?[A-Za-z0-9]{40,44}", (".", r"(?<=dp\.)(?=pt|st|sa|ct|scim|audit)")),
    _shape("linear-key", r"(?<![A-Za-z0-9_-])lin_(?:api|oauth)_[A-Za-z0-9]{40}", ("_", "(?:(?<=lin_api_)|(?<=lin_oauth_))")),
    _token("postman-key", "PMAK-", r"[0-9a-f]{24}-[0-9a-f]{34}", ("-", "(?<=PMAK-)")),
    _token("atlassian-token", r"AT[AC]TT3", r"[A-Za-z0-9_=-]{40,}", ("A", "(?=T[AC]TT3)")),
    _token("gitlab-token", "glptt-", r"[0-9a-f]{40}", ("-", "(?<=glptt-)")),
    _shape("gitlab-token", r"(?<![A-Za-z0-9_-])gl(?:soat|cbt|imt)-[A-Za-z0-9_-]{20,}", ("-", "(?:(?<=glsoat-)|(?<=glcbt-)|(?<=glimt-))")),
    _token("gitlab-token", "GR1348941", r"[A-Za-z0-9_-]{20,}", ("GR1348941", "")),
    _token("age-secret-key", "AGE-SECRET-KEY-1", r"[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}", ("-", "(?<=AGE-SECRET-KEY-)(?=1)")),
    _token("sentry-token", "sntry[su]_", r"[A-Za-z0-9+/=_]{40,}", ("_", "(?<=sntry[su]_)")),
    _token("grafana-token", "glsa_", r"[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}", ("_", "(?<=glsa_)")),
    _token("grafana-cloud-token", "glc_", r"[A-Za-z0-9+/]{32,}={0,2}", ("_", "(?<=glc_)")),
    _token("newrelic-key", "NRAK-", r"[A-Z0-9]{27}", ("-", "(?<=NRAK-)")),
    _token("pulumi-token", "pul-", r"[a-f0-9]{40}", ("-", "(?<=pul-)(?=[a-f0-9]{40})")),
    _token("supabase-token", "sbp_", r"[a-f0-9]{40}", ("_", "(?<=sbp_)")),
    _token("replicate-token", "r8_", r"[A-Za-z0-9]{37}(?![A-Za-z0-9])", ("_", "(?<=r8_)")),
    _token("groq-key", "gsk_", r"[A-Za-z0-9]{48,}", ("_", "(?<=gsk_)")),
    _token("xai-key", "xai-", r"[A-Za-z0-9]{70,}", ("-", "(?<=xai-)")),
    _token("perplexity-key", "pplx-", r"[A-Za-z0-9]{40,}", ("-", "(?<=pplx-)")),
    _token("langsmith-key", "lsv2_(?:pt|sk)_", r"[a-f0-9]{32}_[a-f0-9]{10}", ("_", "(?:(?<=lsv2_pt_)|(?<=lsv2_sk_))")),
    _token("rubygems-key", "rubygems_", r"[a-f0-9]{48}", ("_", "(?<=rubygems_)")),
    _token("dockerhub-token", "dckr_pat_", r"[A-Za-z0-9_-]{27,}", ("_", "(?<=dckr_pat_)")),
    _token("figma-token", "figd_", r"[A-Za-z0-9_-]{40,}", ("_", "(?<=figd_)")),
    _token("notion-token", "ntn_", r"[A-Za-z0-9]{40,}", ("_", "(?<=ntn_)")),
    _token("notion-token", "secret_", r"(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{43}(?![A-Za-z0-9])", ("_", "(?<=secret_)(?=[A-Za-z0-9]{43})")),
    _token("airtable-token", "pat", r"[A-Za-z0-9]{14}\.[a-f0-9]{64}", (".", r"(?<=pat[A-Za-z0-9]{14}\.)(?=[a-f0-9]{64})")),
    _token("dynatrace-token", r"dt0c01\.", r"[A-Z0-9]{24}\.[A-Z0-9]{64}", (".", r"(?<=dt0c01\.)")),
    _shape("terraform-token", r"(?<![A-Za-z0-9])[a-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,}", (".", r"(?=atlasv1\.)")),
    _token("contentful-token", "CFPAT-", r"[A-Za-z0-9_-]{43}", ("-", "(?<=CFPAT-)")),
    _token("dropbox-token", r"sl\.", r"[A-Za-z0-9._-]{130,}", (".", r"(?<=sl\.)(?=[A-Za-z0-9._-]{130})")),
    _token("alibaba-key", "LTAI", r"[A-Za-z0-9]{20}(?![A-Za-z0-9])", ("A", "(?<=LTA)(?=I)")),
    _token("tencent-key", "AKID", r"[A-Za-z0-9]{32}(?![A-Za-z0-9])", ("A", "(?=KID)")),
    _shape("firebase-key", r"(?<![A-Za-z0-9_-])AAAA[A-Za-z0-9_-]{7}:APA91b[A-Za-z0-9_-]{100,}", (":", r"(?=APA91b)")),
    _token("mapbox-token", r"sk\.eyJ", r"[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}", (".", r"(?<=sk\.)(?=eyJ)")),
    _token("openshift-token", "sha256~", r"[A-Za-z0-9_-]{43}", ("~", r"(?<=sha256~)")),
    _token("elevenlabs-key", "sk_", r"[a-f0-9]{48}(?![A-Za-z0-9])", ("_", "(?<=sk_)(?=[a-f0-9]{48})")),
    _token("tailscale-key", "tskey-", r"(?:api|auth|client|scim|webhook)-[A-Za-z0-9]+-[A-Za-z0-9]+", ("-", "(?<=tskey-)")),
    _token("brevo-key", "xkeysib-", r"[a-f0-9]{64}-[A-Za-z0-9]{16}", ("-", "(?<=xkeysib-)")),
    _shape("plaid-token", r"(?<![A-Za-z0-9_-])access-(?:sandbox|development|production)-[0-9a-f-]{36}", ("-", "(?<=access-)(?=sandbox-|development-|production-)")),
    _token("braintree-token", r"access_token\$production\$", r"[a-z0-9]{16}\$[a-f0-9]{32}", ("access_token$", "")),
    _token("render-key", "rnd_", r"[A-Za-z0-9]{28,}", ("_", "(?<=rnd_)")),
    _token("netlify-token", "nfp_", r"[A-Za-z0-9]{36,}", ("_", "(?<=nfp_)")),
    _shape("fly-token", r"(?<![A-Za-z0-9])f(?:m2|o1)_[A-Za-z0-9+/=_-]{40,}", ("_", "(?<=fm2_)"), ("_", "(?<=fo1_)")),
    _token("buildkite-token", "bkua_", r"[a-f0-9]{40}", ("_", "(?<=bkua_)")),
    _token("circleci-token", "CCIPAT_", r"[A-Za-z0-9_]{40,}", ("_", "(?<=CCIPAT_)")),
    _token("shippo-token", "shippo_(?:live|test)_", r"[a-f0-9]{40}", ("_", "(?:(?<=shippo_live_)|(?<=shippo_test_))")),
    _token("onepassword-token", "ops_eyJ", r"[A-Za-z0-9+/=_-]{40,}", ("_", "(?<=ops_)(?=eyJ)")),
    # PlanetScale's passwords and service tokens, Supabase's new secret keys, Resend's
    # `re_<8>_<24>`, Neon's `napi_`, PostHog's personal `phx_` (its `phc_` project keys are public),
    # SonarQube's `squ_`/`sqp_`/`sqa_`, Prefect's `pnu_`, Honeycomb's ingest `hcaik_`, Fireworks' `fw_`,
    # JFrog's `AKCp` API keys, Bitbucket's `ATBB` app passwords, Langfuse's `sk-lf-<uuid>`.
    *(_token("planetscale-token", f"pscale_{kind}_", r"[A-Za-z0-9_-]{32,}", ("_", f"(?<=pscale_{kind}_)")) for kind in ("pw", "tkn", "oauth")),
    _token("supabase-token", "sb_secret_", r"[A-Za-z0-9_-]{20,}", ("_", "(?<=sb_secret_)")),
    _token("resend-key", "re_[A-Za-z0-9]{8}_", r"[A-Za-z0-9]{24,}(?![A-Za-z0-9_-])", ("_", r"(?<=re_[A-Za-z0-9]{8}_)")),
    _token("neon-key", "napi_", r"[a-z0-9]{64}(?![A-Za-z0-9])", ("_", "(?<=napi_)")),
    _token("posthog-key", "phx_", r"[A-Za-z0-9]{40,}", ("_", "(?<=phx_)")),
    _token("sonarqube-token", "sq[upa]_", r"[a-f0-9]{40}(?![A-Za-z0-9])", ("_", "(?<=sq[upa]_)")),
    _token("prefect-key", "pnu_", r"[A-Za-z0-9]{36}(?![A-Za-z0-9])", ("_", "(?<=pnu_)")),
    _token("honeycomb-key", "hcaik_", r"[A-Za-z0-9]{50,}", ("_", "(?<=hcaik_)")),
    _token("fireworks-key", "fw_", r"(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{20,}(?![A-Za-z0-9])", ("_", "(?<=fw_)")),
    _token("jfrog-key", "AKCp", r"[A-Za-z0-9]{60,}(?![A-Za-z0-9])", ("A", "(?<![A-Za-z0-9]A)(?=KCp[A-Za-z0-9]{60})")),
    _token("bitbucket-token", "ATBB", r"[A-Za-z0-9]{28,}(?![A-Za-z0-9])", ("A", "(?<![A-Za-z0-9]A)(?=TBB[A-Za-z0-9]{28})")),
    _token("langfuse-key", "sk-lf-", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", ("-", "(?<=sk-)(?=lf-)")),
)

# ~/.pgpass: `host:port:database:user:password`, one per line; the port is digits or `*`, the
# host has a letter, a dot or `*` (so that times and IPv6 addresses are not read as one). A `:` or
# `\` inside a field is escaped with `\` (pgpass's own rule), so `\:` is part of the field.
# The line may also start in a JSON string inside text that is not JSON (`x "h:5432:db:u:PW\nfoo"`,
# `"a\nh:5432:db:u:PW"`), or in single quotes (`echo 'h:5432:db:u:PW' >> ~/.pgpass`): after an
# escaped line break or a string's opening quote. There the line
# ends at the next line break or closing quote escaped as deeply as what opened it (`\n` after `"`,
# `\\n` after `\"` in a dump of a dump; `\\n` after `"` is a backslash and an `n`, the
# password's): `_pgpass_value_end` finds it. A line's last field also ends before a closing tag
# (`<b>h:5432:db:u:PW</b>`) and an escaped break of any depth with only markup after it on that
# line (`PW\n</b>`): that markup stays.
_PGPASS_FIELD = r"(?:[^:\s\\\"']|\\+[^\s\\:rn\"']|\\+(?=:)|\\:)+"
_PGPASS = re.compile(
    # (The host's letter is looked for within the host's own characters: read on to the next
    # colon or space, a run of quotes had each of them read the run to its end.)
    r"(?m)(?:^|(?P<escaped>(?<=\\n)|(?<=\\r)|(?<=[\"'])))[ \t]*(?=[^:\s\\\"']*[A-Za-z.*])[^:\s\\\"']+:(?:[0-9]+|\*):"
    # (A space or a tab inside the password is the password's: libpq reads the field to the
    # line's end. Read to the first space, a password holding one was no match, and stayed.)
    rf"{_PGPASS_FIELD}:{_PGPASS_FIELD}:(?P<s>(?:[^:\s\\<]|\\+[^\s\\]|\\+(?=\s|\Z)|<(?!/[A-Za-z]))(?:[^:\s\\<]|[ \t]+(?=[^\s])|\\+[^\s\\]|\\+(?=\s|\Z)|<(?!/[A-Za-z]))*?)"
    r"(?=\r?$|\\+[rn]|\\*\"|'|</[A-Za-z])"
    # (After a real line start, the rest of that line too: `_replace_pgpass` judges it.)
    # (After an escaped start, as far as a later end: `_pgpass_value_end` picks the one at the start's depth.)
    r"(?(escaped)(?:[^:\s\\<]|[ \t]+(?=[^\s])|\\+[^\s\\]|<(?!/[A-Za-z]))*(?=\r?$|\\+[rn]|\\*\"|'|</[A-Za-z])|(?P<rest>[^\r\n]*))"
)
# (The port, then three fields, the last ending a line, a string or before a tag.)
_PGPASS_GATE = r"(?<=[0-9*]:)(?=[^:\s]+:(?:[^:\s\\]|\\.)+:(?:[^:\s\\]|\\.)(?:[^:\s\\]|[ \t]+(?=[^\s])|\\.)*?(?:\r?(?:\n|\Z)|\\[rn\\]|[\"']|</))"
# What may follow a real line's last field for it to stay: escaped breaks, tags, escaped quotes,
# spaces. Anything else (`ab\ncd`, `ab"cd` typed into a .pgpass file) may be the password's own,
# and goes with it.
_PGPASS_MARKUP_REST = re.compile(r"(?:\\+[rnt]|\\+\"|</?[A-Za-z][\w.:-]*[ \t]*/?>|[ \t])*")
# (Each run of backslashes tried from its first one only: from every one of them, a long run
# would be read to its end again, its square in time.)
_PGPASS_ANY_END = re.compile(r"(?<!\\)\\+[rn]|(?<!\\)\\*\"|</[A-Za-z]")
_PGPASS_SINGLE_QUOTE_END = re.compile(r"'|</[A-Za-z]")
_PGPASS_MARK = marker("pgpass-password")


def _escapes_before(text: str, pos: int) -> int:
    """How many backslashes run back from `pos`."""
    count = 0
    while pos > count and text[pos - count - 1] == "\\":
        count += 1
    return count


def _pgpass_value_end(text: str, m: "re.Match[str]") -> int:
    """Where the password of a line that started in an escaped text ends: at the first line
    break or quote escaped as deeply as the line's own start, or before a closing tag."""
    start = m.start("escaped")
    opener = text[start - 1]
    if opener == "'":
        # (A shell's or Python's single quotes: `echo 'h:5432:db:u:PW' >> ~/.pgpass`. Whether `\n`
        # in them is a break or two characters only the program knows: `_replace_pgpass` keeps
        # what follows one only when it is markup.)
        found = _PGPASS_SINGLE_QUOTE_END.search(text, m.start("s"), m.end())
        return found.start() if found else m.end()
    depth = _escapes_before(text, start - 1)
    breaks, quotes = (depth, depth - 1) if opener != "\"" else (depth + 1, depth)
    ends = rf"(?<!\\)(?:\\{{{breaks}}}[rn]|\\{{{quotes}}}\")|</[A-Za-z]" if quotes >= 0 else rf"(?<!\\)\\{{{breaks}}}[rn]|</[A-Za-z]"
    found = _compiled(ends).search(text, m.start("s"), m.end())
    return found.start() if found else m.end()


def _replace_pgpass(text: str, m: "re.Match[str]") -> Optional[str]:
    start = m.start("s")
    line_end = _pgpass_value_end(text, m) if m.group("escaped") is not None else m.end()
    # (Within the line, an end of any depth, a tag or a deeper escape, if only markup follows it:
    # `PW\n</b>` on a real line, `PW\\n</b>` in a JSON string, keep their markup.)
    found = _PGPASS_ANY_END.search(text, start, line_end)
    end = found.start() if found and _PGPASS_MARKUP_REST.fullmatch(text, found.start(), line_end) else line_end
    if text[start:end] == _PRINTF_CONVERSION:  # printf's argument is the password: `_replace_pgpass_printf`'s
        return None
    if _PGPASS_SHELL_AFTER.search(text, start, end):
        return None  # `printf '%s\n' h:5432:db:u:PW > $PGPASSFILE`: a command's word, `_PGPASS_WORD`'s
    if (" " in text[start:end] or "\t" in text[start:end]) and not _PGPASS_HOST_NAME.fullmatch(text, m.start(), text.index(":", m.start())):
        return None  # `<td>12:30:45:10:99 elapsed`: a row with words after it needs a host's name first
    return text[m.start() : start] + _PGPASS_MARK + text[end : m.end()]


# A shell operator after a space: what follows a .pgpass row there is the command's, not a
# password's words (a password may hold spaces).
_PGPASS_HOST_NAME = re.compile(r"[ \t]*[\w.*-]*[A-Za-z.*][\w.*-]*")
_PGPASS_SHELL_AFTER = re.compile(r"[ \t](?:[0-9]?>>?|\|\|?|&&|;|<<<?)(?=[ \t]|\Z)")


# A .pgpass line as one word of a command: `echo h:5432:db:u:PW >> ~/.pgpass`, `printf '%s\n'
# h:5432:db:u:PW > $PGPASSFILE`, `echo localhost:*:*:postgres:PW | tee -a ~/.pgpass`, `tee -a
# ~/.pgpass <<< h:5432:db:u:PW`. No line starts there, so `_PGPASS` cannot tell it from the
# words of prose, times (`12:30:45:00:01`), port maps and mounts; the word is read as one only on
# a command that names the file (`pgpass`, `PGPASSFILE`, within a few hundred characters on its
# line), and only as exactly five fields, each non-empty, the port digits or `*`, the host with a
# letter, a dot or `*`: IPv6 addresses have empty or more fields, /etc/passwd and /etc/shadow rows
# more fields and no digit port. The word starts after a space, `=` or `(`, and ends where the
# shell's word does (a space, `;|&<>()`, a backtick, an escaped break or quote of a JSON string);
# quoted pieces (`u:'P@ss w0rd'`) are the password's. (A line or string that opens with the
# row is `_PGPASS`'s.)
_PGPASS_WORD_FIELD = r"(?:[^:\s\\\"'<>|;&()`=]|\\+[^\s\\rnt\"'])+"
_PGPASS_WORD_VALUE = r"(?:[^:\s\\\"'<>|;&()`]|\\+[^\s\\rnt\"']|'[^':\r\n]*'|\"[^\":\\\r\n]*\")"
_PGPASS_WORD = re.compile(
    # (The host's letter is looked for by `_replace_pgpass_word`: a look-ahead for it here read
    # each `=`-joined word to the text's end, `PGPASS=PGPASS=...` in its square.)
    r"(?<![^\s=(])(?P<host>[^:\s\\\"'<>|;&()`=]+):(?:[0-9]+|\*):"
    rf"{_PGPASS_WORD_FIELD}:{_PGPASS_WORD_FIELD}:(?P<s>{_PGPASS_WORD_VALUE}+)"
    # (Not where the word goes on: a sixth field, or a shorter password left behind.)
    rf"(?!{_PGPASS_WORD_VALUE}|:)"
)
# (At the port's colon: two more colons before a space, the second followed by the password.
# Each run stops at a colon, so a run of colons costs each a step. Times, `h:m:s`, have one.)
_PGPASS_WORD_GATE = r"(?<=[0-9*]:)(?=[^\s:]*:[^\s:]*:[^\s:])"
# (The command names the file: its name within reach on the match's own line.)
_PGPASS_NAMED = re.compile(r"pgpass|PGPASS")
_PGPASS_WORD_REACH = 300
_PGPASS_HOST = re.compile(r"[A-Za-z.*]")


# (Or the command writes to a variable, `>> $F`, `| tee -a "${F}"`, that an earlier line set to
# a path naming the file, `F=~/.pgpass`, within this many characters.)
_WRITES_TO_VARIABLE = re.compile(r"(?:>>?|\btee(?:[ \t]+-a)?)[ \t]*\\?\"?\$\{?(?P<name>[A-Za-z_]\w*)")
_PGPASS_SETTING = re.compile(r"(?<![\w$])(?P<name>[A-Za-z_]\w*)=[^\n]{0,300}?(?:pgpass|PGPASS)")
_PGPASS_VARIABLE_REACH = 2000


def _names_pgpass_through_a_variable(text: str, lo: int, hi: int) -> bool:
    written = {w.group("name") for w in _WRITES_TO_VARIABLE.finditer(text, lo, hi)}
    if not written:
        return False
    before = max(0, lo - _PGPASS_VARIABLE_REACH)
    return any(s.group("name") in written for s in _PGPASS_SETTING.finditer(text, before, lo))


def _replace_pgpass_word(text: str, m: "re.Match[str]") -> Optional[str]:
    start, end = m.span()
    lo = max(text.rfind("\n", max(0, start - _PGPASS_WORD_REACH), start) + 1, start - _PGPASS_WORD_REACH, 0)
    hi = text.find("\n", end, end + _PGPASS_WORD_REACH)
    hi = hi if hi >= 0 else min(len(text), end + _PGPASS_WORD_REACH)
    if not _PGPASS_HOST.search(m.group("host")):
        return None
    if not _PGPASS_NAMED.search(text, lo, hi) and not _names_pgpass_through_a_variable(text, lo, hi):
        return None
    if _is_placeholder(m.group("s").strip("'\"")):
        return None
    return _replace_group(text, m, "s", _PGPASS_MARK)


# A .pgpass line printf'd with its password as an argument: `printf 'h:5432:db:u:%s\n' PW >>
# ~/.pgpass`, `printf '%s:%s:%s:%s:%s\n' localhost 5432 shop app PW > $PGPASSFILE`. The format's
# fields, each a literal or a `%s`, take printf's arguments in order; where they make a .pgpass
# row (five fields, the port digits or `*`, the host with a letter, a dot or `*`) and the password
# field is a `%s`, its argument goes (a `$VAR` stays: not a value). A format with no literal field
# must be on a line that names the file, as `_PGPASS_WORD`'s rows. (This rule runs before
# `_PGPASS`, which leaves a `%s` password alone.)
_PRINTF_WORD = r"""(?:'[^'\n]*'|"(?:[^"\\\n]|\\[^\n])*"|\\"(?:[^"\\\n]|\\[^"\n])*\\"|[^\s;|&<>()'"\\])+"""
_PGPASS_PRINTF = re.compile(
    r"\bprintf[ \t]+(?:-v[ \t]+\w+[ \t]+)?(?P<q>\\?['\"])(?P<fmt>(?:[^'\"\n\\]|\\[^'\"\n])*?)(?P=q)"
    rf"(?P<args>(?:[ \t]+{_PRINTF_WORD}){{1,5}})"
)
_PRINTF_FIELD = re.compile(r"(?:[^:\\]|\\.)+")
_PRINTF_CONVERSION = "%s"
_PRINTF_LINE_END = re.compile(r"(?:\\+[rn])+$")


def _replace_pgpass_printf(text: str, m: "re.Match[str]") -> Optional[str]:
    fields = _PRINTF_LINE_END.sub("", m.group("fmt")).split(":")
    if len(fields) != 5 or fields[4] != _PRINTF_CONVERSION or not all(_PRINTF_FIELD.fullmatch(f) for f in fields):
        return None
    args = list(re.finditer(_PRINTF_WORD, m.group("args")))
    conversions = [i for i, f in enumerate(fields) if f == _PRINTF_CONVERSION]
    if len(args) < len(conversions) or any("%" in f for i, f in enumerate(fields) if i not in conversions):
        return None
    row = list(fields)
    for i, arg in zip(conversions, args):
        row[i] = arg.group(0).strip("'\"\\")
    if not _PGPASS_HOST.search(row[0]) or not re.fullmatch(r"[0-9]+|\*", row[1]):
        return None
    if len(conversions) == 5:
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.end())
        if not _PGPASS_NAMED.search(text, line_start, len(text) if line_end < 0 else line_end):
            return None
    password = args[len(conversions) - 1]
    if _is_placeholder(row[4]) or row[4].startswith("$"):
        return None
    offset = m.start("args") - m.start()
    whole = text[m.start() : m.end()]
    return whole[: offset + password.start()] + _PGPASS_MARK + whole[offset + password.end() :]


# A password piped to a program that reads it from stdin: `echo pw | sudo -S cmd`,
# `echo pw | docker login -u bob --password-stdin`, `echo 'bob:pw' | chpasswd`, `echo pw | gpg
# --passphrase-fd 0`, and secret stores' setters (`| gh secret set NAME`, `| wrangler secret put
# NAME`, `| vercel env add NAME`, `| docker secret create NAME -`, `| fly secrets import`).
_STDIN_READER_WORDS = "(?:sudo|stdin|passwd|passphrase-fd|secret|env add|pass insert|pass add|keyring set|cryptsetup|with-token|argon2|kinit)"
_PIPED_PASSWORD = re.compile(
    r"(?:echo|printf|yes(?<![\w.-]yes))[ \t]+(?:-[neE]+[ \t]+)*(?:(?P<dq>\"[^\"\n]*\")|(?P<sq>'[^'\n]*')|(?P<uq>[^\s|;&\"']+))[ \t]*\|"
    # (Only where its gate's look holds, so that the gate covers every match: `echo x | tee -a f`
    # matched without one, and a text's other pipe decided whether the rule ran at all.)
    rf"(?=[^\n|;&]{{0,200}}?{_STDIN_READER_WORDS})(?P<tail>[^\n|;&]*)"
)
_STDIN_READER = re.compile(
    # (`passwd` reads the new password twice from a pipe: `printf 'pw\npw\n' | passwd bob`;
    # Samba's `smbpasswd -s` likewise.)
    r"\bsudo\b.*[ \t]-[A-Za-z]*S\b|--password-stdin|\bchpasswd\b|^[ \t]*(?:sudo[ \t]+)?passwd(?![\w.-])|\bsmbpasswd\b.*[ \t]-[A-Za-z]*s\b|--passphrase-fd[ \t]+0\b"
    r"|\bsecrets?[ \t:]+(?:versions[ \t]+)?(?:set|put|create|add|import)\b|\benv[ \t]+add\b"
    # Password stores fed on stdin: `pass insert -e x <<< pw`, `secret-tool store ... <<< pw`,
    # `keyring set svc user <<< pw` (gcloud's `secrets versions add --data-file=-` above).
    r"|\b(?:go)?pass[ \t]+(?:insert|add)\b|\bsecret-tool[ \t]+store\b|\bkeyring[ \t]+set\b"
    # Any flag or option that says it reads its secret from stdin: `gh auth login --with-token`,
    # `sshfs -o password_stdin`, `--token-stdin`, `--secret-stdin`; and `kubectl create secret
    # ... --from-file=password=/dev/stdin`.
    r"|--with-token\b|(?:password|passphrase|token|secret|key)[-_]stdin\b|\bsecret\b.*/dev/stdin\b"
    # (cryptsetup reads a LUKS passphrase, vncpasswd -f a VNC password; mkpasswd -s and the
    # argon2 CLI, `echo -n pw | argon2 SALT -id`, hash the password they read.)
    r"|\bcryptsetup\b|\bvncpasswd\b|\bmkpasswd\b.*[ \t](?:-s|--stdin)\b|\bargon2\b"
    # (Kerberos's kinit reads the password from a pipe: `echo pw | kinit alice@REALM`.)
    r"|\bkinit\b"
)
# The same program fed by a here-string or a one-line here-document: `docker login -u bob
# --password-stdin <<< 'pw'`, `vercel env add API_TOKEN production <<< "x"`, `... <<EOF`/pw/`EOF`.
# Matched from the `<<` (C and Python shift with it too), the command before it read back on its line.
_HERE_STRING = re.compile(
    r"<<(?:<[ \t]*(?:(?P<dq>\"[^\"\n]*\")|(?P<sq>'[^'\n]*')|(?P<uq>[^\s|;&\"'<>()\\]+))"
    r"|-?[ \t]*(?P<q>[\"']?)(?P<tag>\w+)(?P=q)[ \t]*\r?\n(?P<line>[^\r\n]+)\r?\n[ \t]*(?P=tag)[ \t]*(?=\r?\n|\Z))"
)
_HERE_STRING_GATE = r"(?=<|-?[ \t]*[\"']?\w+[\"']?[ \t]*\r?\n)"


def _replace_here_string(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _STDIN_READER.search(_command_text(text, m.start())):
        return None
    if m.start("line") >= 0:
        return None if _is_placeholder(m.group("line")) else _replace_group(text, m, "line", _CLI_MARK)
    group = next(g for g in ("dq", "sq", "uq") if m.start(g) >= 0)
    new = _mark_arg(m.group(group), "")
    if new is None:
        return None
    return text[m.start() : m.start(group)] + new + text[m.end(group) : m.end()]


# PowerShell's `ConvertTo-SecureString 'pw' -AsPlainText -Force` (`-String "pw"`): with
# -AsPlainText on its line the string is the password in clear. (As completion spells it: an
# anchor is case-sensitive, and each costs every text a substring test.)
_SECURE_STRING = re.compile(
    r"ConvertTo-SecureString(?P<flags>(?:[ \t]+-(?i:String|AsPlainText|Force)\b)*)[ \t]+"
    rf"(?:\"(?P<dq>{_DQ_BODY})\"|'(?P<sq>[^'\r\n]*)')"
)
_AS_PLAIN_TEXT = re.compile(r"(?i)-AsPlainText\b")
# ... and piped into it: `"pw" | ConvertTo-SecureString -AsPlainText -Force`.
_PIPED_SECURE_STRING = re.compile(
    # (In a JSON string the quotes are `\\"`: the backslash is no part of the password.)
    r"(?:\\?\"(?P<dq>[^\"\\\r\n]*)\\?\"|'(?P<sq>[^'\\\r\n]*)')[ \t]*\|[ \t]*ConvertTo-SecureString(?=[^\r\n|;]{0,80}-AsPlainText)"
)


def _replace_secure_string(text: str, m: "re.Match[str]") -> Optional[str]:
    line_end = text.find("\n", m.end())
    rest = text[m.end() : line_end if line_end >= 0 else len(text)]
    if not (_AS_PLAIN_TEXT.search(m.group("flags")) or _AS_PLAIN_TEXT.search(rest)):
        return None
    group = "dq" if m.start("dq") >= 0 else "sq"
    return None if _is_placeholder(m.group(group)) else _replace_group(text, m, group, _CLI_MARK)


def _replace_piped_secure_string(text: str, m: "re.Match[str]") -> Optional[str]:
    group = "dq" if m.start("dq") >= 0 else "sq"
    return None if _is_placeholder(m.group(group)) else _replace_group(text, m, group, _CLI_MARK)


def _replace_piped(text: str, m: "re.Match[str]") -> Optional[str]:
    # (The command ends at a JSON-escaped line break too: `echo hi | cat\\ngh auth login --with-token`.)
    if not _STDIN_READER.search(m.group("tail").split("\\n", 1)[0]):
        return None
    group = next(g for g in ("dq", "sq", "uq") if m.start(g) >= 0)
    new = _mark_arg(m.group(group), "")
    if new is None:
        return None
    return text[m.start() : m.start(group)] + new + text[m.end(group) : m.end()]


# A user and password pair handed to an HTTP client: requests' `auth=("user", "pw")`,
# `HTTPBasicAuth("user", "pw")`, aiohttp's `BasicAuth("user", "pw")`.
# Matched from the comma (where its gate is), the call before it checked by `_replace_auth_pair`.
# Also Elasticsearch's `basic_auth=("u", "pw")` / `http_auth=`, and builder methods: OkHttp's and
# Ktor's `.basicAuth("u", "pw")`, Spring's `.credentials("u", "pw")`, superagent's `.auth("u",
# "pw")`, reqwest's `.basic_auth("u", Some("pw"))`.
_AUTH_PAIR = re.compile(r",(?<=[\"'],)[ \t]*(?:Some\([ \t]*)?(?P<q>[\"'])(?P<s>[^\"'\n]+)(?P=q)[ \t]*\)")
_AUTH_PAIR_GATE = r"(?<=[\"'],)(?=[ \t]*(?:Some\([ \t]*)?[\"'][^\"'\n]+[\"'][ \t]*\))"
_AUTH_PAIR_CALL = re.compile(
    r"(?:\b(?:basic_|http_)?auth[ \t]*=[ \t]*|(?:Basic|Digest)Auth|\.(?:basicAuth|basic_auth|credentials|auth))\([ \t]*([\"'])[^\"'\n]*\1\Z"
)
_AUTH_PAIR_MARK = marker("auth-pair")


def _replace_auth_pair(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _AUTH_PAIR_CALL.search(text[max(0, m.start() - 200) : m.start()]) or _is_placeholder(m.group("s")):
        return None
    return _replace_group(text, m, "s", _AUTH_PAIR_MARK)

# XML elements named like a secret: Maven's settings.xml `<password>x</password>`, `<apiKey>x</apiKey>`,
# with attributes too (`<password encrypted="false">x</password>`).
# (The name's ending is in the pattern as well as in the gate: an element with attributes
# (`<label for="pw">Password</label>`) is no match unless its name says secret.)
_XML_NAME_END = r"(?i:password|passwd|passphrase|pwd|secret|token|key|pass|psk|auth)"
_XML_ELEMENT = re.compile(
    rf"<(?P<name>(?=[A-Za-z_])[\w.:-]{{0,60}}?{_XML_NAME_END})(?:\s[^<>]{{0,300}})?>(?P<s>[^<>\r\n]{{1,300}})</(?P=name)>"
)
_XML_GATE = rf"(?<=</)(?=[\w.:-]*?{_XML_NAME_END}>)"


def _replace_xml_element(text: str, m: "re.Match[str]") -> Optional[str]:
    kind = _name_kind(m.group("name"))
    value = m.group("s").strip()
    if kind is None or not _plausible_secret(kind, value):
        return None
    if kind != _CHOSEN and value.startswith(("~/", "/", "./", "${")):
        return None  # Maven's <privateKey>~/.ssh/id_rsa</privateKey>: where the key is, not the key
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# An element that a `name` or `key` attribute names, its text the value: Hibernate's and Ant's
# `<property name="hibernate.connection.password">pw</property>`, Java's XML properties `<entry
# key="db.password">pw</entry>`, Android's `<string name="api_key">k</string>`; and a plist's
# `<key>APIKey</key>` with the `<string>k</string>` after it (Info.plist, GoogleService-Info.plist).
_NAMED_ELEMENT_LOOK = (
    r"(?==[\"'][^\"'<>\r\n]{0,100}?(?i:password|passwd|passphrase|pwd|secret|token|key|pass|psk|auth|salt)[\"'][^<>]{0,200}>[^<>\r\n]{1,300}</)"
)
_NAMED_ELEMENT = re.compile(
    r"(?:name(?<=[\s:]name)|key(?<=\skey))" + _NAMED_ELEMENT_LOOK
    + r"=(?P<q>[\"'])(?P<name>[^\"'<>\r\n]{1,100})(?P=q)[^<>]{0,200}(?<!/)>(?P<s>[^<>\r\n]{1,300})</[\w.:-]{1,60}>"
)
_PLIST_ENTRY = re.compile(r"<key>(?P<name>[^<>\r\n]{1,100})</key>\s{0,200}<string>(?P<s>[^<>\r\n]{1,300})</string>")


def _replace_named_element(text: str, m: "re.Match[str]") -> Optional[str]:
    kind = _name_kind(m.group("name"))
    value = m.group("s").strip()
    if kind is None or not _plausible_secret(kind, value):
        return None
    if kind != _CHOSEN and value.startswith(("~/", "/", "./", "${")):
        return None  # a key's path, not the key
    if text.startswith("<string", max(0, text.rfind("<", max(0, m.start() - 200), m.start()))) and m.re is _NAMED_ELEMENT:
        if " " in value or not _looks_made(value):
            return None  # Android's UI text: <string name="password">Passwort</string>, a label in any language
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# An HTML password field with its value filled in: `<input type="password" name="pw" value="x">`,
# attributes in any order, quoted or not. Other inputs' values are form data, and a field's name
# (`pw`, `login`) need not say password: its type does.
# (`<input`, `<INPUT` and `<Input` only: each anchor of several characters costs every text a
# substring scan.)
_INPUT_TAG = re.compile(r"<(?:input|INPUT|Input)(?=[\s/])[^<>]{0,2000}>")
_HTML_ATTRIBUTE = re.compile(r"(?P<name>[\w:-]+)[ \t]*=[ \t]*(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<uq>[^\s\"'>]+))")


def _replace_password_input(text: str, m: "re.Match[str]") -> Optional[str]:
    attributes = {a.group("name").lower(): a for a in _HTML_ATTRIBUTE.finditer(m.group(0))}
    kind, value = attributes.get("type"), attributes.get("value")
    if kind is None or value is None or kind.group(kind.lastgroup).lower() != "password":
        return None
    group = value.lastgroup
    if _is_placeholder(value.group(group)):
        return None  # value="", value={password}, value="{{ form.pw }}"
    tag = m.group(0)
    return tag[: value.start(group)] + _ASSIGNMENT_MARK + tag[value.end(group) :]


# A name/value pair naming a secret: Kubernetes and ECS environment entries,
# `- name: DB_PASSWORD` / `value: x`, `{"name": "API_TOKEN", "value": "x"}`, Terraform's
# `name = "X"` / `value = "x"`, .NET's `<add key="ApiKey" value="x" />`, Spring's `<property
# name="password" value="x"/>`, a form field in JSON (`{"name": "password", "value": "x"}`). The
# value must follow the name, on its line or the next.
_NAMED_VALUE_WORDS = (
    r"(?i:password|passwd|pwd|secret|token|key|pass|pw|psk|auth|salt|base|cookie|authorization)"
    rf"{_VARIANT}?"  # (a variant after it, `DB_PASSWORD_PROD`, `API_KEY_2`)
)
# After `name`/`key`: the pattern's own rest is the gate's look, so that both hold at the same places.
# (The name is read 100 characters at most: unbounded, `name:name:name:...` read on to the end
# of the text from every `name`, minutes for 40 KB.)
_NAMED_VALUE_REST = (
    rf"[\"']?[ \t]*[:=][ \t]*(?P<q>[\"']?)(?P<name>(?=[A-Za-z_])[\w.:-]{{0,100}}?{_NAMED_VALUE_WORDS})(?P=q)"
    # (Android's `<meta-data android:name="io.sentry.auth-token" android:value="x"/>` too.)
    r"(?:[ \t]*,[ \t]*|[ \t]*\r?\n[ \t]*|[ \t]+)[\"']?(?:android:)?value[\"']?[ \t]*[:=][ \t]*"
    r"(?:\"(?P<dq>[^\"\r\n]*)\"|'(?P<sq>[^'\r\n]*)'|(?P<uq>[^\s,}\]\"']+))"
)
_NAMED_VALUE = re.compile(rf"(?:name(?<![\w-]name)|key(?<![\w-]key)){_NAMED_VALUE_REST}")
_NAMED_VALUE_LOOK = re.sub(r"\(\?P<\w+>|\(\?P=q\)", lambda g: "(?:" if g.group(0).startswith("(?P<") else "[\"']?", _NAMED_VALUE_REST)


def _replace_named_value(text: str, m: "re.Match[str]") -> Optional[str]:
    group = next(g for g in ("dq", "sq", "uq") if m.start(g) >= 0)
    name, value = m.group("name"), m.group(group)
    if name.lower().endswith(("cookie", "authorization")):
        # A HAR header ({"name": "Cookie", "value": "sid=x"}): as the header itself is redacted.
        mark = _named_mark(name, value)
        return None if mark is None else _replace_group(text, m, group, mark)
    kind = _name_kind(name)
    if kind is None or not _plausible_secret(kind, value):
        return None
    return _replace_group(text, m, group, _ASSIGNMENT_MARK)


# --- Mail logins typed or logged in the clear: IMAP's `tag LOGIN user password` (`openssl
# s_client -crlf -connect imap.example.com:993`, imaplib's debug output `> b'a001 LOGIN alice pw'`)
# and POP3's `USER alice` then `PASS pw`. IMAP needs a tag (`a001`, `A1`, `.`: `vault login
# -method github` is no IMAP) and exactly two arguments; POP3's PASS
# must come within two lines after a USER line, since test runners print `PASS name` lines too.
_LINE_START = r"(?:^|(?<=\n)|(?<=\\n))"
_MAIL_PREFIX = r"[ \t]*(?:C:[ \t]*|>+[ \t]*b?[\"']|[\d:.]+[ \t]+>[ \t]+)?"
_IMAP_LOGIN = re.compile(
    rf"{_LINE_START}{_MAIL_PREFIX}(?:[A-Za-z]{{0,4}}[0-9]{{1,6}}|\.)[ \t]+(?:LOGIN|login)[ \t]+(?:\"[^\"\r\n\\]*\"|[^\s\"'\\-][^\s\"'\\]*)[ \t]+"
    r"(?:\"(?P<dq>[^\"\r\n\\]+)\"|(?P<uq>[^\s\"'\\]+))[ \t]*(?=\r?\n|\\r|\\n|[\"']?\Z|[\"'](?:\\r|\\n|\r?\n))"
)
_POP3_PASS = re.compile(
    rf"{_LINE_START}{_MAIL_PREFIX}(?:USER|user)[ \t]+[^\s\\]+[ \t]*[\"']?(?:\r?\n|\\r\\n|\\n)"
    rf"(?:[^\r\n\\]*(?:\r?\n|\\r\\n|\\n)){{0,2}}?{_MAIL_PREFIX}(?:PASS|pass)[ \t]+(?P<uq>[^\s\\\"']+)[ \t]*(?=[\"']?(?:\r?\n|\\r|\\n|\Z))"
)
_MAIL_MARK = marker("mail-password")
# Right after `LOGIN`: a tag's last character and a space before it, two arguments after it.
_IMAP_GATE = r"(?<=[0-9.][ \t](?:LOGIN|login))(?=[ \t]+\S+[ \t]+\S)"
# Right after `PASS`: one argument, then the line ends (Python's `pass` ends its line at once).
_POP3_GATE = r"(?=[ \t]+[^\s\\\"']+[ \t]*[\"']?(?:\r?\n|\\r|\\n|\Z))"


def _replace_mail_login(text: str, m: "re.Match[str]") -> Optional[str]:
    group = "dq" if m.groupdict().get("dq") is not None else "uq"
    return None if _is_placeholder(m.group(group)) else _replace_group(text, m, group, _MAIL_MARK)


# --- Secrets handed to code by position, where the parameter's name (not in the text) is what
# says secret: `smtp.login("me@x.com", "app password")` (imaplib, poplib, ftplib alike), ldap's
# `simple_bind_s("cn=admin,dc=x", "pw")`, `new NetworkCredential("bob", "pw")`, `new PDO($dsn,
# 'root', 'pw')`, `mysqli_connect('db', 'root', 'pw')`, `pymysql.connect('db', 'root', 'pw')`,
# `jwt.sign(payload, 'key')`, `jwt.encode(payload, "key",
# algorithm="HS256")`, `jwt.decode(token, "key")`, `jwt.verify(token, 'key')`, Node's
# `crypto.createHmac('sha256', 'key')`, Ruby's `OpenSSL::HMAC.hexdigest('SHA256', 'key', data)`
# (the second argument), Python's `hmac.new(b'key', msg)`, Java's `new SecretKeySpec("key".getBytes(),
# ...)` (the first), Go's `hmac.New(sha256.New, []byte("key"))`. Only a string literal goes: a
# variable there is code.
_CALL_ARG = r"(?:\"[^\"\r\n]*\"|'[^'\r\n]*'|\{[^{}]*\}|[\w.\[\]$]+(?:\([^()\r\n]*\))?)"
_LITERAL_ARG = r"(?:[bB]|\[\]byte\()?(?P<q>[\"'])(?P<s>(?:(?!(?P=q))[^\\\r\n]|\\.)+)(?P=q)"
# What hashes passwords, named by library or by argon2-cffi's docs' `ph`: node-argon2 and
# passlib's `argon2`, py-scrypt's `scrypt`, passlib's `pbkdf2_sha256` and `bcrypt_sha256`,
# argon2-cffi's `PasswordHasher()` (its arguments too), passlib's `.using(rounds=...)` after any.
_PASSWORD_HASHER = (
    r"(?:argon2|Argon2|scrypt(?<![\w.]scrypt)|ph(?<![\w.]ph)|pbkdf2_sha(?:1|256|512)|bcrypt_sha256|PasswordHasher\([^()\r\n]*\))"
    r"(?:\.using\([^()\r\n]*\))?"
)
# (Each alternative starts with a literal and looks back after it, so that the search over a
# whole text scans for those literals' first letters instead of trying every offset.)
_SECOND_ARG_CALLS = (
    r"login(?<=\.login)\(|simple_bind(?<=\.simple_bind)(?:_s)?\(|bind_s(?<=\.bind_s)\("
    r"|jwt(?<![\w.]jwt)\.(?:sign|encode|decode|verify)\(|JWT(?<![\w.]JWT)\.(?:sign|encode|decode|verify)\("
    r"|createHmac\(|HMAC\.(?:hexdigest|digest|base64digest)\(|hmac\.New\("
    # (user, password): .NET, Java, Apache HttpClient, Spring Security, the AWS SDK, requests.
    r"|NetworkCredential\(|PasswordAuthentication\(|UsernamePasswordCredentials\(|UsernamePasswordAuthenticationToken\("
    r"|BasicAWSCredentials\(|HTTPDigestAuth\("
    # RabbitMQ's pika.PlainCredentials('user', 'pw'); Oracle's cx_Oracle/oracledb.connect('user', 'pw', dsn).
    r"|PlainCredentials\(|cx_Oracle\.connect\(|oracledb\.connect\("
    # (hash, password): argon2-cffi's `ph.verify(h, 'pw')`, node-argon2's `argon2.verify(h, 'pw')`, Go's
    # `bcrypt.CompareHashAndPassword(h, []byte("pw"))`; (algorithm, password): `hashlib.pbkdf2_hmac('sha256', b'pw', ...)`.
    rf"|{_PASSWORD_HASHER}\.verify\(|CompareHashAndPassword\(|pbkdf2_hmac\("
    # (user, password): OkHttp's `Credentials.basic("u", "pw")`, Jakarta's `PasswordCredential`;
    # (consumer key, secret): tweepy's `OAuthHandler`; (app id, admin key): `algoliasearch`;
    # (algorithm, key): Node's `createCipheriv('aes-256-cbc', 'key', iv)`, jjwt's `signWith(alg,
    # "key")`; (data, key): CryptoJS's `AES.encrypt(data, 'key')`, `HmacSHA256(msg, 'key')`.
    r"|Credentials\.basic\(|PasswordCredential\(|OAuthHandler\(|algoliasearch\(|createCipheriv\(|createDecipheriv\("
    r"|signWith\(|AES(?<![\w]AES)\.(?:encrypt|decrypt)\(|Hmac(?:SHA\d*|MD5)\("
    # MongoDB's `db.changeUserPassword("admin", "pw")` (its `createUser` is a `pwd:` field).
    r"|changeUserPassword\("
    # (user, password): PyGithub's `Github("u", "pw")` and `Auth.Login("u", "pw")`; (url, token):
    # python-gitlab's `Gitlab(url, "T")`; (account SID, auth token): any Twilio client built with a
    # literal SID, `Client("AC...", "T")`, `twilio("AC...", "T")`, `Twilio::REST::Client.new("AC...", "T")`.
    r"|Github(?<![\w.]Github)\(|Login(?<=Auth\.Login)\(|Gitlab(?<![\w]Gitlab)\("
    # PHP's Oracle: `oci_connect('scott', 'pw', 'db')`, `oci_pconnect`, `oci_new_connect`.
    r"|oci_connect\(|oci_pconnect\(|oci_new_connect\("
)
# (A Twilio client's account SID, a literal right before the comma: see _replace_literal_after_comma.)
_TWILIO_SID_BEFORE = re.compile(r"\([ \t]*[\"']AC[0-9a-fA-F]{32}[\"'][ \t]*\Z")
# (host or DSN, user, password): PHP's PDO and mysqli, JDBC, PyMySQL/MySQLdb, ftplib.
_THIRD_ARG_CALLS = (
    r"PDO(?<![\w.$]PDO)\(|mysqli_connect\(|mysqli(?<![\w.$]mysqli)\(|mysql_connect\(|getConnection\("
    r"|pymysql\.connect\(|MySQLdb\.connect\(|pymssql\.connect\(|FTP(?<![\w.]FTP)(?:_TLS)?\("
    # Sequelize's `new Sequelize('db', 'user', 'pw', {...})`, Ruby's `Net::FTP.new(h, u, pw)`,
    # Go's `smtp.PlainAuth("", user, pw, host)` (identity, user, password).
    r"|Sequelize\(|FTP\.new\(|PlainAuth\("
    # Azure's `ClientSecretCredential("tenant", "client", "secret")`.
    r"|ClientSecretCredential\("
    # PHP's (resource or DSN, user, password): odbc_connect, db2_connect, ibase_connect, mssql_connect,
    # ssh2_auth_password, imap_open, ftp_login; (link, dn, password): ldap_bind.
    r"|odbc_connect\(|mssql_connect\(|ibase_connect\(|db2_connect\(|odbc_pconnect\(|db2_pconnect\("
    r"|ssh2_auth_password\(|imap_open\(|ftp_login\(|ldap_bind\("
)
# ADO's `conn.Open(dsn, "sa", "pw")` and VBScript's `cn.Open "DSN=x", "sa", "pw"`: (connection
# string, user, password), the user a literal name (a file's `.Open(name, "r", enc)` has a mode there).
_ADO_OPEN = (
    r"Open(?<=\.Open)(?:\([ \t]*|[ \t]+){arg}[ \t]*,[ \t]*(?:\"(?![rwabtx+]{{1,3}}\")[\w.@\\-]{{1,64}}\"|'(?![rwabtx+]{{1,3}}')[\w.@\\-]{{1,64}}')[ \t]*"
)
# ldap3's `Connection(server, 'cn=admin,dc=x', 'pw')` and kombu's `Connection('host', 'guest', 'pw')`:
# (server, user, password). Many libraries have a `Connection` class, so only where the user is a
# string literal too (fabric's `Connection('host', 'user', 22)` has a number third).
_CONNECTION_CALL = r"Connection\([ \t]*{arg}[ \t]*,[ \t]*(?:\"[^\"\r\n]*\"|'[^'\r\n]*')[ \t]*"
# paramiko's `client.connect('host', 22, 'user', 'pw')` (host, port, user, password), only where
# the port is a number or a name saying port and the user a string literal (`.connect` names many
# calls: `pymysql.connect(h, u, pw, 'db')` must keep its database). (ADO's `conn.Open(dsn, "sa",
# "pw")` is left: `.Open(name, mode, encoding)` is far more common.)
_USER_LITERAL_CALLS = (
    r"connect(?<=\.connect)\([ \t]*{arg}[ \t]*,[ \t]*(?:[0-9]{{1,5}}|[\w.]*(?i:port)[\w.]*)[ \t]*,[ \t]*"
    r"(?:\"[^\"\r\n]*\"|'[^'\r\n]*')[ \t]*"
)
# (jwt-go's `token.SignedString([]byte("key"))`: an HMAC key. Password hashing, checking and key
# derivation handed the password itself, as their docs' first lines show it: `bcrypt.hashpw(b"pw",
# ...)`, `bcrypt.hash('pw', 10)`, `bcrypt.compare('pw', h)`, jBCrypt's `BCrypt.hashpw("pw", salt)`,
# Go's `bcrypt.GenerateFromPassword([]byte("pw"), cost)`, Ruby's `BCrypt::Password.create('pw')`,
# node-argon2's `argon2.hash('pw')`, argon2-cffi's `PasswordHasher().hash("pw")` and `ph.hash("pw")`,
# passlib's `pbkdf2_sha256.hash("pw")` and `.verify("pw", h)` (any `*_crypt` scheme too), Spring's
# `passwordEncoder.encode("pw")` / `.matches("pw", h)`, PHP's `password_hash('pw', ...)` and
# `password_verify('pw', $h)`, Werkzeug's `generate_password_hash('pw')`, Django's
# `make_password('pw')`, `hashlib.scrypt(b"pw", ...)`, Node's `crypto.pbkdf2Sync('pw', ...)` and
# `crypto.scryptSync('pw', ...)`, .NET's `new Rfc2898DeriveBytes("pw", salt, n)` and
# `KeyDerivation.Pbkdf2("pw", ...)`. And a cipher's key: `Fernet(b"key")`, `AESGCM(b"key")`,
# `ChaCha20Poly1305(b"key")`, PyCryptodome's `AES.new(b"key", mode)`.)
_FIRST_ARG_CALLS = (
    # (jjwt's `Keys.hmacShaKeyFor("k".getBytes())`.)
    r"hmac\.new\(|HMAC\.new\(|SecretKeySpec\(|Hmac\w*::new_from_slice\(|SignedString\((?=\[\]byte\()|hmacShaKeyFor\("
    r"|rypt(?<=bcrypt|BCrypt)\.(?:hashpw|hashSync|hash|compareSync|compare|checkpw|GenerateFromPassword)\("
    r"|rypt(?<=BCrypt)::Password\.create\(|rypt(?<=bcrypt)::(?:hash|verify)\("
    # crypt(3) and its kin, handed the password: pgcrypto's `crypt('pw', gen_salt('bf'))`, PHP's
    # `crypt('pw', $salt)`, Python's `crypt.crypt("pw", salt)`.
    r"|rypt(?<=crypt)(?<![\w]crypt)\("
    # passlib's CryptContext as its docs name it (`pwd_context.verify("pw", h)`), Laravel's
    # `Hash::check('pw', $h)`/`Hash::make('pw')`.
    r"|context(?:(?<=pwd_context)|(?<=password_context)|(?<=crypt_context))\.(?:hash|verify)\("
    r"|Hash::(?:check|make)\("
    rf"|{_PASSWORD_HASHER}\.(?:hash|verify|encrypt)\(|crypt(?<=_crypt)\.(?:hash|verify|encrypt)\("
    r"|Encoder(?<=passwordEncoder|PasswordEncoder)(?:\.\w+)?(?:\([^()\r\n]*\))?\.(?:encode|matches)\("
    r"|password(?<=generate_password)_hash\(|password(?<![\w.$>]password)_(?:hash|verify)\(|password(?<=make_password)\("
    r"|scrypt(?:(?<=hashlib\.scrypt)|(?<=crypto\.scrypt))(?:Sync)?\(|pbkdf2(?<=crypto\.pbkdf2)(?:Sync)?\("
    r"|Rfc2898DeriveBytes(?:\.Pbkdf2)?\(|Pbkdf2(?<=KeyDerivation\.Pbkdf2)\("
    r"|Fernet\(|AESGCM\(|ChaCha20Poly1305\(|AES(?<![\w.]AES)\.new\("
    # An API client built with its token: PyGithub's `Github("T")` and `Auth.Token("T")`, Slack's
    # `WebClient("T")`, `new Stripe("sk_...")` (not a browser's publishable `pk_` key); express's
    # `cookieParser("secret")` (one secret or a list), its cookies' signing key.
    r"|Github(?<![\w.]Github)\(|Token(?<=Auth\.Token)\(|WebClient(?<![\w.]WebClient)\(|Stripe(?<![\w.]Stripe)\((?![ \t]*[\"']pk_)"
    r"|cookieParser\("
    # A literal compared in constant time, first: `hmac.compare_digest("lit", key)`, Go's
    # `subtle.ConstantTimeCompare([]byte("lit"), []byte(t))`, Node's `timingSafeEqual(Buffer.from("lit"), b)`.
    r"|compare_digest\(|ConstantTimeCompare\((?=\[\]byte\()|timingSafeEqual\([ \t]*Buffer\.from\("
)
# A second or third argument is read at its comma (the `,` gate's own guard branch: a literal
# after a comma), the call found by reading back from there; a first argument is read from its
# call, found at `hmac`, `Hmac`, `HMAC` or `SecretKeySpec`. (Each anchor of its own would cost
# a pass over every text.)
_LITERAL_AFTER_COMMA = re.compile(rf",[ \t]*(?:Buffer\.from\([ \t]*)?{_LITERAL_ARG}")
_CALL_LOOKBACK = 300
_CALL_BEFORE_COMMA = re.compile(
    rf"(?:(?:{_SECOND_ARG_CALLS})[ \t]*{_CALL_ARG}[ \t]*|(?:{_THIRD_ARG_CALLS})[ \t]*{_CALL_ARG}[ \t]*,[ \t]*{_CALL_ARG}[ \t]*"
    rf"|{_CONNECTION_CALL.format(arg=_CALL_ARG)}|{_USER_LITERAL_CALLS.format(arg=_CALL_ARG)}|{_ADO_OPEN.format(arg=_CALL_ARG)})\Z"
)
# Some call's name in the text before the comma: a quick test before the regex above.
_CALL_NAMES = re.compile(
    r"login|bind|jwt|JWT|mac|MAC|Credential|Authentication|DigestAuth|PDO|mysql|MySQL|mssql|Connection|Oracle|oracledb|FTP"
    r"|Sequelize|PlainAuth|\.connect|\.verify|CompareHash|pbkdf2|OAuthHandler|algoliasearch|ipheriv|signWith|AES\.|Hmac|UserPassword"
)
# (The later calls' names, looked for near the comma only: each alternative more in the regex above
# cost every literal after a comma a tenth more.)
_MORE_CALL_NAMES = re.compile(
    r"Git|\.Open|\.open|SetCredentials|_p?connect|ssh2_auth|imap_open|password_hash|HashPassword|HashedPassword|compare_digest|TimeCompare|timingSafe"
)
_MORE_CALL_REACH = 160
_OPENS_LITERAL = r"[ \t]*(?:[bB]|\[\]byte\()?[\"']"
_FIRST_LITERAL = re.compile(rf"(?:{_FIRST_ARG_CALLS})[ \t]*{_LITERAL_ARG}")
_FIRST_LITERAL_GATES = (
    ("mac", r"(?:(?<=Hmac)|(?<=hmac))(?=\.new\(|\w*::new_from_slice\()|(?<=hmac)(?=ShaKeyFor\()"),
    ("A", r"(?<=HM)(?=C\.new\()"),
    ("Key", rf"(?=Spec\()|(?=Derivation\.Pbkdf2\({_OPENS_LITERAL})"),
    ("S", r"(?=ignedString\(\[\]byte\()"),
    ("A", r"(?<![\w.]A)(?=ES\.new\(|ESGCM\()"),
    # (BCrypt, bcrypt, _crypt, scrypt, crypto.pbkdf2: one anchor; a literal must open the call.
    # argon2's and the other hashers' calls, `.using(...)` or not, at `hash(` and `verify(`.)
    ("rypt", rf"(?=(?:\.\w+|::Password\.create|::\w+|Sync|o\.pbkdf2(?:Sync)?)?\({_OPENS_LITERAL})"),
    (":", rf"(?<=Hash:)(?=:(?:check|make)\({_OPENS_LITERAL})"),
    ("hash(", rf"(?={_OPENS_LITERAL})"),
    ("verify(", rf"(?={_OPENS_LITERAL})"),
    ("password", rf"(?<=make_password)(?=\()|(?=Encoder(?:\.\w+)?(?:\([^()\r\n]*\))?\.(?:encode|matches)\({_OPENS_LITERAL})"),
    ("Password", rf"(?=Encoder(?:\.\w+)?(?:\([^()\r\n]*\))?\.(?:encode|matches)\({_OPENS_LITERAL})"),
    ("DeriveBytes", ""),
    ("Fernet(", ""),
    ("20Poly1305(", ""),
    # (The clients at anchors scanned for already: the `b` of Github and WebClient, `S`, `A`.)
    ("b", r"(?=\([ \t]*[\"'])(?<=Github)(?<![\w.]Github)|(?=Client\([ \t]*[\"'])(?<=Web)(?<![\w.]Web)"),
    ("S", r"(?<![\w.]S)(?=tripe\([ \t]*[\"'](?!pk_))"),
    ("A", r"(?=uth\.Token\([ \t]*[\"'])"),
    ("cookieParser(", ""),
    ("compare_digest(", rf"(?={_OPENS_LITERAL})"),
    ("ConstantTimeCompare(", r"(?=[ \t]*\[\]byte\([\"'])"),
    ("timingSafeEqual(", r"(?=[ \t]*Buffer\.from\([ \t]*[\"'])"),
)
_POSITIONAL_LITERAL_MARK = marker("code-literal")
# Calls read apart from _CALL_BEFORE_COMMA, each alternative there costing every literal after a
# comma: XMLHttpRequest's and MSXML's/WinHTTP's `open(method, url, async, user, password)`
# (JavaScript's `xhr.open("GET", url, false, "u", "pw")`, VBScript's `http.Open "GET", url, False,
# "u", "pw"`: the fifth argument; a call with three stays), WinHTTP's `http.SetCredentials "u",
# "pw", 0`; (hash, password): Werkzeug's `check_password_hash(h, 'pw')`; (user, password): ASP.NET
# Identity's `hasher.HashPassword(user, "pw")`, (user, hash, password) its `VerifyHashedPassword`;
# and a literal compared in constant time, whatever its variable is called: `hmac.compare_digest(key, "lit")`,
# Go's `subtle.ConstantTimeCompare([]byte(t), []byte("lit"))`, Node's `crypto.timingSafeEqual(a, Buffer.from("lit"))`.
_HTTP_METHOD = r"(?i:GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|PROPFIND|PROPPATCH|REPORT|MKCOL|COPY|MOVE|LOCK|UNLOCK|SEARCH)"
# A constant-time compare's first argument may be an expression, not one argument's shape: a
# prefix joined to a digest (`"sha256=" + mac.hexdigest()`, `"sha1=%s" % d`, `b"v0=" + x`), a format
# (`f"sha256={d}"`, `"sha256={}".format(d)`), a chain of calls (`hmac.new(k, b, sha256).hexdigest()`),
# a header looked up (`request.headers["X-Hub-Signature-256"]`), Go's
# `[]byte("sha256="+hex.EncodeToString(mac.Sum(nil)))`; read short of these, the literal compared
# after it was kept. (Parentheses nest two levels deep; a subscript holds a literal or no brackets.)
_NESTED_PARENS = r"\((?:[^()\r\n]|\((?:[^()\r\n]|\([^()\r\n]*\))*\))*\)"
_SUBSCRIPT = r"\[(?:\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\[\]\"'\r\n]*)\]"
_COMPARED_OPERAND = (
    rf"(?:[bBfFrRuU]{{0,2}}(?:\"[^\"\r\n]*\"|'[^'\r\n]*')|(?:[\w$]|{_SUBSCRIPT})(?:[\w.$]|{_SUBSCRIPT})*)"
    rf"(?:{_NESTED_PARENS})?(?:\.\w+{_NESTED_PARENS}|{_SUBSCRIPT})*"
)
_COMPARED_ARG = rf"{_COMPARED_OPERAND}(?:[ \t]*[+%][ \t]*{_COMPARED_OPERAND})*"
_LATE_CALL_BEFORE_COMMA = re.compile(
    rf"(?:\.[Oo]pen(?:\([ \t]*|[ \t]+)(?P<q>[\"']){_HTTP_METHOD}(?P=q)(?:[ \t]*,[ \t]*{_CALL_ARG}){{3}}"
    rf"|(?:SetCredentials(?:\([ \t]*|[ \t]+)|check_password_hash\(|HashPassword\()[ \t]*{_CALL_ARG}"
    rf"|(?:compare_digest|ConstantTimeCompare|timingSafeEqual)\([ \t]*{_COMPARED_ARG}"
    rf"|VerifyHashedPassword\([ \t]*{_CALL_ARG}[ \t]*,[ \t]*{_CALL_ARG})[ \t]*\Z"
)
# (Each call's name looked for from the end, its call read from there: a search of the regex
# above from every offset cost every literal after a comma a microsecond.)
_LATE_CALL_WORDS = (".open", ".Open", "SetCredentials", "check_password_hash(", "HashPassword(", "VerifyHashedPassword(", "compare_digest(",
                    "ConstantTimeCompare(", "timingSafeEqual(")


# The same calls with a literal of any length before the user: `xhr.open("GET", "<a URL of 500
# characters>", false, "u", "pw")`, ADO's `conn.Open("<a long DSN>", "sa", "pw")`. Read at the comma,
# the call's name is out of reach (_MORE_CALL_REACH, _CALL_LOOKBACK): these are read from the call's
# name on, each literal to its closing quote (from each name, a scan to the next quote of its kind:
# linear however the names repeat).
_ANY_LITERAL = r"(?:\"[^\"\r\n]*\"|'[^'\r\n]*'|`[^`\r\n]*`)"
_OPEN_LONG_LITERAL = re.compile(
    rf"\.(?:[Oo]pen(?:\([ \t]*|[ \t]+)(?P<m>[\"']){_HTTP_METHOD}(?P=m)[ \t]*,[ \t]*{_ANY_LITERAL}(?:[ \t]*,[ \t]*{_CALL_ARG}){{2}}"
    rf"|Open(?:\([ \t]*|[ \t]+)(?:\"[^\"\r\n]*\"|'[^'\r\n]*')[ \t]*,[ \t]*(?:\"(?![rwabtx+]{{1,3}}\")[\w.@\\-]{{1,64}}\"|'(?![rwabtx+]{{1,3}}')[\w.@\\-]{{1,64}}'))"
    rf"[ \t]*,[ \t]*{_LITERAL_ARG}"
)
_OPEN_LONG_LITERAL_GATES = ((".open", r"(?=(?:\([ \t]*|[ \t]+)[\"'])"), (".Open", r"(?=(?:\([ \t]*|[ \t]+)[\"'])"))


# A literal compared in constant time is the secret, except where it is not what is compared:
# a prefix or a format (GitHub's `compare_digest("sha256=" + mac.hexdigest(), sig)`, Slack's `"v0="
# + ...`, `"sha1=%s" % d`, `[]byte("sha256="+mac)`), or where both sides are literals (a test of the
# function: `compare_digest("abc", "xyz")`, `compare_digest(b"dummy", b"dummy")`, no secret checked).
# A prefix expression is no literal: what it is compared with, `compare_digest("sha256=" + x, "S")`, goes.
_CONSTANT_TIME_WORDS = ("compare_digest(", "ConstantTimeCompare(", "timingSafeEqual(")
_OPERATOR_AFTER = re.compile(r"[ \t]*[+%*]")
# (A literal's end to the next argument: Go's `[]byte("x")` and Node's `Buffer.from("x", "utf8")` closed.)
_LITERAL_ARG_CLOSE = r"(?:[ \t]*,[ \t]*[\"'][\w-]{1,10}[\"'])?[ \t]*\)?[ \t]*"
_WHOLE_LITERAL = r"(?:[bB]|\[\]byte\(|Buffer\.from\([ \t]*)?(?:\"[^\"\r\n]*\"|'[^'\r\n]*')"
_SECOND_ALSO_LITERAL = re.compile(rf"{_LITERAL_ARG_CLOSE},[ \t]*{_WHOLE_LITERAL}{_LITERAL_ARG_CLOSE}\)")
_FIRST_ALSO_LITERAL = re.compile(rf"(?:compare_digest|ConstantTimeCompare|timingSafeEqual)\([ \t]*{_WHOLE_LITERAL}{_LITERAL_ARG_CLOSE}\Z")


def _replace_first_literal(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.group(0).startswith(_CONSTANT_TIME_WORDS) and (_OPERATOR_AFTER.match(text, m.end()) or _SECOND_ALSO_LITERAL.match(text, m.end())):
        return None  # compare_digest("sha256=" + mac.hexdigest(), sig), compare_digest("abc", "xyz")
    return _replace_positional_literal(text, m)


def _compared_literal_kept(text: str, m: "re.Match[str]", before: str, near: int) -> bool:
    """For a literal after a comma, in a constant-time compare: whether it is a prefix or a format,
    or the first argument a literal too (see _OPERATOR_AFTER)."""
    for word in _CONSTANT_TIME_WORDS:
        at = before.rfind(word, near)
        if at >= 0 and _LATE_CALL_BEFORE_COMMA.match(before, at):
            return bool(_OPERATOR_AFTER.match(text, m.end()) or _FIRST_ALSO_LITERAL.match(before, at))
    return False


def _late_call_before(before: str, near: int) -> bool:
    for word in _LATE_CALL_WORDS:
        at = before.rfind(word, near)
        if at >= 0 and _LATE_CALL_BEFORE_COMMA.match(before, at):
            return True
    return False


def _replace_literal_after_comma(text: str, m: "re.Match[str]") -> Optional[str]:
    before = text[max(0, m.start() - _CALL_LOOKBACK) : m.start()]
    if before.find("AC", len(before) - 40) >= 0 and _TWILIO_SID_BEFORE.search(before, max(0, len(before) - 40)):
        return _replace_positional_literal(text, m)  # Client("AC<sid>", "T"), twilio("AC<sid>", "T")
    near = max(0, len(before) - _MORE_CALL_REACH)
    if not (_CALL_NAMES.search(before) or _MORE_CALL_NAMES.search(before, near)):
        return None  # print("a", "b"): no call that takes a secret there
    if _late_call_before(before, near):
        if _compared_literal_kept(text, m, before, near):
            return None  # compare_digest(sig, "sha256=" + expected), compare_digest("abc", "xyz")
        return _replace_positional_literal(text, m)  # xhr.open("GET", url, false, "u", "pw"), check_password_hash(h, "pw")
    if not _CALL_BEFORE_COMMA.search(before):
        return None
    return _replace_positional_literal(text, m)


_ALGORITHM_NAMES = frozenset(
    ("SHA256", "SHA1", "SHA512", "SHA384", "MD5", "HS256", "HS512", "BLOWFISH", "BCRYPT", "SHA256_CRYPT", "SHA512_CRYPT", "MD5_CRYPT")
)


def _replace_positional_literal(text: str, m: "re.Match[str]") -> Optional[str]:
    value = m.group("s")
    if _is_placeholder(value) or len(value) < 4 or value.startswith(_MARKER_OPEN):
        return None  # jwt.sign(payload, 'secret'): a tutorial's word, not a key
    if _DOTTED_REF.fullmatch(value) and not _looks_random(value):
        return None
    if value.upper() in _ALGORITHM_NAMES:
        return None  # createHmac(alg, ...) read one argument early; Ansible's password_hash('sha512')
    return _replace_group(text, m, "s", _POSITIONAL_LITERAL_MARK)


# --- Terraform: `variable "db_password" { default = "v" }`, and any variable marked
# `sensitive = true`. The name is the block's label and the value its `default`, lines apart.
_TF_VARIABLE = re.compile(r'variable[ \t]+"(?P<name>[\w-]+)"[ \t]*\{(?P<body>(?:[^{}]|\{[^{}]*\}){0,2000}?)\}')
_TF_DEFAULT = re.compile(r'(?m)^[ \t]*default[ \t]*=[ \t]*"(?P<s>(?:[^"\\\r\n]|\\.)+)"')
_TF_SENSITIVE = re.compile(r"(?m)^[ \t]*sensitive[ \t]*=[ \t]*true\b")


def _replace_tf_variable(text: str, m: "re.Match[str]") -> Optional[str]:
    body = m.group("body")
    default = _TF_DEFAULT.search(body)
    if default is None or _is_placeholder(default.group("s")):
        return None
    if _name_kind(m.group("name")) is None and not _TF_SENSITIVE.search(body):
        return None
    at = m.start("body") - m.start()
    whole = m.group(0)
    return whole[: at + default.start("s")] + _ASSIGNMENT_MARK + whole[at + default.end("s") :]


# --- A secret given to a setter or builder as a literal: Java's `ds.setPassword("pw")`,
# `config.setApiKey("k")`, a builder's `.password("pw")` / `.withApiKey("k")`. After `set` or
# `with`, any secret name; alone, the bare secret words only (`.token("if")` parses).
_SETTER_WORDS = r"(?:Password|Secret|Token|ApiKey|AccessKey|SecretKey|ClientSecret|AccessToken|AuthToken|PrivateKey)"
# (Go's `ssh.Password("pw")`; Redis clients' one-argument `.auth("pw")`, PHP's `$redis->auth('pw')`.)
_SETTER = re.compile(
    # (PHP's static `Stripe::setApiKey('k')` too.)
    rf"(?:\.|->|::)(?P<name>(?:set|with)(?=[A-Z])\w*?{_SETTER_WORDS}|password|Password|secret|auth|apiKey|api_key|clientSecret"
    # (Django's `user.set_password('pw')`, `user.check_password('pw')`, as tests write them.)
    rf"|client_secret|accessToken|access_token|authToken|auth_token|secretKey|secret_key|set_password|check_password)"
    rf"\([ \t]*{_LITERAL_ARG}[ \t]*\)"
)
# (Every name above ends in one of these words, right before its `(` and a quote.)
_SETTER_GATES = tuple(
    (word, r"(?=\([ \t]*[bB]?[\"'])")
    for word in ("Password", "password", "Secret", "secret", "Token", "token", "Key", "key")
) + (("auth", r"(?:(?<=\.auth)|(?<=->auth))(?=\([ \t]*[\"'][^\"'\r\n]*[\"'][ \t]*\))"),)


_SETTER_VERB = re.compile(r"^(?:set|with)(?=[A-Z])")


def _replace_setter(text: str, m: "re.Match[str]") -> Optional[str]:
    name = _SETTER_VERB.sub("", m.group("name"))
    kind = _CHOSEN if name == "auth" else _name_kind(name)  # redis.auth("pw"): one argument, the password
    if name == "auth" and not (_MIXED.match(m.group("s")) or _looks_made(m.group("s"))):
        return None  # router.auth("basic"), passport-style strategy names: words
    value = m.group("s")
    if kind is None or value.startswith(_MARKER_OPEN) or not _plausible_secret(kind, value):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# --- `aws configure` asked and answered on the terminal: `AWS Secret Access Key [None]: ...`
# (its key id is an AKIA id, found by its shape).
_AWS_CONFIGURE = re.compile(r"AWS (?:Secret Access Key|Session Token) \[[^\]\r\n]*\]:[ \t]*(?P<s>[^\s\"'\\]+)")

# --- Vault's `Key  Value` tables (`vault kv get`, `vault write auth/approle/.../secret-id`,
# `vault token create`): a row's value goes when its key names a secret (`password`, `secret_id`,
# `token`); `lease_duration`, `policies` stay.
# PowerShell prints `Get-ChildItem env:` (`dir env:`, `gci env:X`) in the same shape: `Name  Value`
# over `----  -----`.
_VAULT_TABLE = re.compile(
    r"(?:Key[ \t]+Value[ \t]*\r?\n-{3}|Name[ \t]+Value[ \t]*\r?\n-{4})[ \t]+-{5}[ \t]*\r?\n(?P<rows>(?:[^\r\n]*\S[^\r\n]*(?:\r?\n|\Z))+)"
)
_VAULT_ROW = re.compile(r"(?m)^(?P<name>[\w.-]+)[ \t]{2,}(?P<value>\S[^\r\n]*?)[ \t]*\r?$")


def _replace_vault_table(text: str, m: "re.Match[str]") -> Optional[str]:
    rows = m.group("rows")
    marked = 0

    def row(r: "re.Match[str]") -> str:
        nonlocal marked
        kind, value = _name_kind(r.group("name")), r.group("value")
        if kind is None or value.startswith(_MARKER_OPEN) or not _plausible_secret(kind, value):
            return r.group(0)
        marked += 1
        return r.group(0)[: r.start("value") - r.start()] + _ASSIGNMENT_MARK + r.group(0)[r.end("value") - r.start() :]

    new_rows = _VAULT_ROW.sub(row, rows)
    return None if not marked else m.group(0)[: m.start("rows") - m.start()] + new_rows


# --- Vault AppRole's `secret_id`, Consul's `SecretID:` (`consul acl token create`), Nomad's
# `Secret ID   = ...` (`nomad acl bootstrap`):
# a UUID or token under a name ending in "id", which the assignment rule's gate does not read.
_SECRET_ID = re.compile(r"(?P<name>SecretID|SecretId|secretId|secret_id|SECRET_ID|secret-id|Secret ID)[\"']?[ \t]*[:=][ \t]*[\"']?(?P<s>[A-Za-z0-9._-]{16,})")

# --- expect scripts: `expect "*password:*"` then `send "pw\r"`.
# (An expect line is short: read at most _EXPECT_REACH characters of it, so that a long line with a
# `password` every few words costs each one that much, not a scan to the line's end.)
_EXPECT_REACH = 300
_EXPECT_SEND = re.compile(
    rf"expect[ \t]+[^\r\n]{{0,{_EXPECT_REACH}}}?(?:password|Password|passphrase)[^\r\n]{{0,{_EXPECT_REACH}}}\r?\n[ \t]*send[ \t]+(?:--[ \t]+)?"
    r"\"(?P<s>(?:[^\"\\\r\n]|\\(?![rn]).)+?)(?:\\r|\\n)?\""
)

# --- Prose that hands over a secret: "the password is Tr0ub4dor&3", "my github token is x",
# "Here is my API key: x", "[sudo] password for bob: x". The value must look made or chosen
# (letters and digits mixed, or symbols), never a word: "the password is stored in Vault".
_PROSE_ONE_WORD = ("password", "Password", "PASSWORD", "passwd", "passphrase", "pw", "token", "Token", "secret", "Secret")
# (A JSON string may close right after it: Ansible's `{"msg": "db password is x"}`, or its line
# end, escaped: `x "the password is x\\nthanks"` in text that is not JSON. So may an element:
# `<p>the password is x</p>`, `x<br>`; the tag is markup, not the password's.)
# (An HTML element's opening tag too, `x<span>`, one of `_HTML_ELEMENTS`: no generic is named so.)
_HTML_ELEMENTS = (
    "(?:br|hr|p|div|span|td|th|tr|li|ul|ol|dl|dt|dd|table|tbody|thead|b|i|em|strong|code|pre|a|img|h[1-6]|small|sub|sup|u|s"
    "|font|center|blockquote|section|article|header|footer|nav|label|input|button|form|option|select|textarea|meta|link|wbr"
    "|BR|HR|P|DIV|SPAN|TD|TH|TR|LI|B|I|A|IMG|FONT|TABLE|PRE|CODE)"
)
_TAG_AFTER_VALUE = rf"</[A-Za-z][\w:-]*>|<{_HTML_ELEMENTS}(?:[ \t][^<>\r\n]{{0,200}})?/?>"
_PROSE_VALUE_ENDS = rf"\s|\Z|(?<=\")[}}\]]|{_TAG_AFTER_VALUE}"
# (An escaped break ends a value too, and escaped quotes may wrap it: `x "the password is
# \\"x\\"\\nok"`. A printer's command, `_PROSE_COMMAND_OUTPUT`, reads its words across an escaped
# break, so `_replace_prose_command_output` turns down a command that crossed one: `x "cat
# key.txt\\nthe build says: x\\nok"` is no command's output.)
# (A sentence's stop after the value stays: `.`, `,`, `?`... but not `!`: `Hunter2!` is a common
# password, and its `!` goes with it; the replacers judge the value without it, so "wrong!" is
# still a word. `_SENTENCE_STOPS` is what they strip.)
_SENTENCE_STOPS = ".,;:?)"


def _without_glued_bang(value: str) -> str:
    """What a rule judges of a value whose glued `!` it keeps: `Hunter2!` goes whole into the
    marker, but "wrong!" is still a word."""
    return value.rstrip("!") or value
_PROSE_QUOTE = r"(?:\\?[\"'`])?"
# (A quote or a backslash inside the value is the password's, `Ug"a3tM,LF-sa`, `ZY2kR^'Wk^Jx`,
# `Ab\\c9`: the value stopped there, no match, and it stayed whole. A quote glued to the
# sentence's end or a space closes a quoted value; an escaped break or quote still ends it.)
_PROSE_CHAR = r"""(?:[^\s"'`\\]|["'`](?=[^\s.,;:?!)\]}"'`\\])|\\\\(?![nrt\\])|\\(?=[^\s\\nrt"'`]))"""
_PROSE_VALUE = rf"{_PROSE_QUOTE}(?P<s>{_PROSE_CHAR}{{6,}}?){_PROSE_QUOTE}(?=[.,;:?)]*(?:{_PROSE_VALUE_ENDS}|\\[nrt]))"
# "API key", "secret key", "access key": matched from their `key`, the word before looked back
# at. (Each alternative starts with a literal word, so that a search of a whole text, once an
# earlier rule has changed it, scans for those words' letters rather than trying every offset.)
# ("private key", as `wg show` and key tools print one: `private key: <base64>`.)
_PROSE_KEY = (
    r"(?:key|Key)(?:(?<=API key|api key|API Key)|(?<=secret key|Secret key|Secret Key|access key|Access key|Access Key)"
    r"|(?<=private key|Private key|Private Key))"
)
# ("my password Tr0ub4dor3xq doesn't work", "the password abc123! is rejected", "use pw
# Xk9mPq2vL to log in", "try passphrase x": a password named by its owner or handed over to
# use, and given right after, no "is" between. One fixed-width look-behind per length.)
# ("using token x for auth", "with token x": a token handed over to use, as a password is.)
_PROSE_OWNERS = (("my", "My", "ur", "he"), ("use", "Use", "try", "Try"), ("with",), ("using", "Using"))
# (A token only when handed over: "the token *must* be read" is a parser's, "my token" no owner's.)
_PROSE_OWNED = "(?:" + "|".join(
    rf"(?<=(?:{'|'.join(owners)}) {word})" for word in ("password", "passphrase", "pw", "token") for owners in _PROSE_OWNERS
    if word != "token" or owners[0] != "my"
) + ")"
# ("- **Password**: `x`", "**API Key:** x": a chat's list of credentials in Markdown. An arrow
# after the word is the printer's: "gh auth token -> x" is command output.)
_PROSE_LABEL = r"(?:\*{1,2}[ \t]*:\*{0,2}|:\*{1,2})[ \t]+"
# ("[sudo] password for bob: x", "the password for admin is x", "the password for the staging DB
# is x", git's prompt "Password for 'https://bob@github.com': x".)
_PROSE_FOR = r"[ \t]+for[ \t]+(?:'[^'\s]{1,200}'|(?:the[ \t]+)?[\w@.-]+(?:[ \t]+[\w@.-]+){0,2}?)(?::|[ \t]+(?:is|was))[ \t]+"
# ("set the password to x": `to` as `is`; "Admin password set to x", "the password was changed to x";
# MySQL's log "A temporary password is generated for root@localhost: x"; "the password (x) works".)
_PROSE_SET_TO = r"[ \t]+(?:(?:is|was|has[ \t]+been)[ \t]+)?(?:set|changed|reset|updated)[ \t]+to[ \t]+"
_PROSE_GENERATED = r"[ \t]+is[ \t]+generated[ \t]+for[ \t]+[\w@.%'-]+:[ \t]+"
_PROSE_PAREN = r"[ \t]+\((?=`?[^\s()`]{6,}`?\))"
# ("password `x`", "user `admin`, password `x`", "the token `x`": a secret's name and a value in
# backticks right after it, as a chat writes a literal down.)
_PROSE_BACKTICKED = r"[ \t]+(?=`[^`\s]{6,}`)"
_PROSE_SECRET = re.compile(
    # (The longer wordings first: the first alternative that matches is the one judged.)
    # ("My password is: x": a colon after the verb too.)
    rf"(?:(?:{'|'.join(_PROSE_ONE_WORD)})(?:{_PROSE_GENERATED}|{_PROSE_SET_TO}|{_PROSE_PAREN}|[ \t]+(?:(?:is|was):?|to)[ \t]+|{_PROSE_FOR}"
    rf"|{_PROSE_OWNED}[ \t]+|{_PROSE_BACKTICKED}|{_PROSE_LABEL})"
    rf"|{_PROSE_KEY}(?:{_PROSE_PAREN}|[ \t]+(?:is|was):?[ \t]+|:[ \t]+|{_PROSE_LABEL})){_PROSE_VALUE}"
)
_PROSE_AFTER_NAME = (
    rf"(?=[ \t]+(?:(?:is|was):?|to)[ \t]|:[ \t]|{_PROSE_FOR}|{_PROSE_BACKTICKED}|{_PROSE_LABEL}|{_PROSE_SET_TO}|{_PROSE_PAREN})|{_PROSE_OWNED}(?=[ \t]+\S)"
)
_PROSE_SECRET_GATES = (
    *((word, _PROSE_AFTER_NAME) for word in _PROSE_ONE_WORD if word not in ("passwd", "passphrase")),
    ("pass", "(?:wd|phrase)(?:" + _PROSE_AFTER_NAME + ")"),
    ("key", _PROSE_AFTER_NAME),
    ("Key", _PROSE_AFTER_NAME),
)
# --- "login with admin / S3cr3t!pass", "Login: root/Tr0ub4dor3", "the creds are admin/Tr0ub4dor3":
# a user and its password after `login` or `creds`/`credentials`, a slash between; the password
# must mix letters with digits or symbols (a path, `login as user/pass`, stays). Found at the
# `login`, `LOGIN`, `creds` and `redentials` anchors and at `Login:`'s colon.
# (Or `user:password`, the user a name: "credentials: bob:PW", "creds=bob:PW", "the creds are bob:PW".)
_LOGIN_PAIR_REST = (
    r"(?:[ \t]+(?:with|is|are|as|using)[ \t]+|[ \t]*[:=][ \t]*|[ \t]+)"
    r"(?:[\w@.+-]{1,64}[ \t]*/[ \t]*|[A-Za-z_][\w@.+-]{0,63}:(?=[^\s/]))"
)
# ("log in with admin / S3cr3t!pass", "sign in as bob:Tr0ub4dor3": the verb in two words.)
_LOG_IN = r"(?:log|Log|sign|Sign)(?<![\w.-]log)(?<![\w.-]Log)(?<![\w.-]sign)(?<![\w.-]Sign) in"
_LOGIN_PAIR = re.compile(
    rf"(?:login(?<![\w.-]login)|Login(?<![\w.-]Login)|LOGIN(?<![\w.-]LOGIN)|creds(?<![\w.-]creds)|Creds(?<![\w.-]Creds)"
    rf"|redentials(?<![\w.-][cC]redentials)|{_LOG_IN}){_LOGIN_PAIR_REST}"
    # (A JSON string's escaped line break ends the password too.)
    r"[`'\"]?(?P<s>[^\s/`'\"\\]{4,}?)[`'\"]?(?=[.,;:?)]*(?:\s|\Z|\\[nrt]))"
)
_LOGIN_PAIR_GATES = (
    ("login", rf"(?<![\w.-]login)(?={_LOGIN_PAIR_REST})"),
    ("LOGIN", rf"(?<![\w.-]LOGIN)(?={_LOGIN_PAIR_REST})"),
    (":", rf"(?<=Login:)(?={_LOGIN_PAIR_REST})"),
    ("creds", rf"(?<![\w.-]creds)(?={_LOGIN_PAIR_REST})"),
    ("Creds", rf"(?<![\w.-]Creds)(?={_LOGIN_PAIR_REST})"),
    ("redentials", rf"(?<![\w.-][cC]redentials)(?={_LOGIN_PAIR_REST})"),
    # (An anchor for "log in" and "Log in", one for "sign in" and "Sign in": each anchor of several
    # characters costs every text a substring test; one ` in` anchor cost more, its looks at every ` in`.)
    ("og in", rf"(?<=[lL]og in)(?<![\w.-][lL]og in)(?={_LOGIN_PAIR_REST})"),
    ("gn in", rf"(?<=[sS]ign in)(?<![\w.-][sS]ign in)(?={_LOGIN_PAIR_REST})"),
)
# "Use admin:S3cr3t!pass to log in", "try bob/Tr0ub4dor3 to sign in": the pair first, the verb after.
_USE_TO_LOG_IN = re.compile(
    r"(?:use|Use|try|Try)(?<![\w.-]use)(?<![\w.-]Use)(?<![\w.-]try)(?<![\w.-]Try)[ \t]+[`'\"]?[\w@.+-]{1,64}(?:[ \t]*/[ \t]*|:)"
    r"(?P<s>[^\s/`'\"\\]{4,64}?)[`'\"]?[ \t]+to (?:log in|sign in|login)\b"
)
_USE_TO_LOG_IN_GATES = (("og in", r"(?<=[ \t]to log in)"), ("gn in", r"(?<=[ \t]to sign in)"), ("login", r"(?<=[ \t]to login)"))
# "user/pass: admin/S3cr3t!pass", "username/password: root:Tr0ub4dor3", "login/pw: bob/x9!k": a
# label naming both, and the pair after it (at the colon, the label read back). The label says
# the second half is the password: a word goes too ("admin/hunter"), a placeholder stays. (The
# assignment rule, which sees `password: root/PW` first, leaves such a pair to this one.)
# "user/password: admin PW", "user/pass: admin, PW": a space or a comma between the two; prose
# reads so too ("user/password: admin only", "user/pass: name, email"), so the password must mix
# letters with digits or symbols.
_SLASH_LABEL_LOOK = r"(?:(?<=/(?i:pass):)|(?<=/(?i:password):)|(?<=/(?i:pw):)|(?<=/(?i:pwd):)|(?<=/ (?i:pass):)|(?<=/ (?i:password):))"
_SLASH_LABEL_PAIR = re.compile(
    # (In a JSON string too: its quotes escaped, `\"root\" / \"PW\"`, the string's own quote after.)
    ":" + _SLASH_LABEL_LOOK + r"[ \t]*(?:\\?[`'\"])?[\w@.+-]{1,64}(?:\\?[`'\"])?(?P<between>[ \t]*[/:,][ \t]*|[ \t]+)"
    r"(?:\\?[`'\"])?(?P<s>[^\s/`'\"\\]{4,}?)(?:\\?[`'\"])?"
    r"(?=[.,;:?)]*(?:\s|\Z|\\[nrt]|\"))"
)
_SLASH_LABEL_BEFORE = re.compile(r"(?:(?<![\w.-])|(?<=\\[nrt]))(?i:user(?:[ _-]?name)?|login)[ \t]*/[ \t]*(?i:pass(?:word)?|pwd?)\Z")


# "creds (user/pass): admin/PW", "credentials (username / password) = root/PW", "creds [user/pass]:
# admin/PW", "**Login (user/pass)**: bob/PW", "Login (user / pass) - admin / PW": the label in
# brackets after a word of its own; "user/password root/PW": the label, then the pair with no
# separator; "user/pass = admin/PW": `=` after a label that no secret's name ends (`pass`, `pw`;
# `USER/PASSWORD=root/PW` is the assignment rule's). Found at the label's second word (`pass`,
# `password`, `pw`, `pwd`), the label's first half read back from there (_LABEL_USER_HALF_BEFORE).
# "creds (user:pass): admin:PW", "login (username, password): admin, PW": a colon or a comma in
# the label, in brackets only (`user:pass@host` is a URL's, `(user, password)` unbracketed a
# sentence's). A comma between the pair's halves, after any of these labels ("creds (user/pass):
# admin, PW"), only for a password that mixes letters with digits or symbols ("login (username,
# password): name, email" is a list).
# (Each spelling at an anchor of its own: `pass`, `Pass`, `PASS`, `pw`, `PW`, with what may follow it.)
_LABEL_PASSWORD_SPELLINGS = (("pass", "(?:word)?"), ("Pass", "(?:word|Word)?"), ("PASS", "(?:WORD)?"), ("pw", "d?"), ("PW", "D?"))
_LABEL_PASSWORD = "(?:" + "|".join(anchor + rest for anchor, rest in _LABEL_PASSWORD_SPELLINGS) + ")"
_LABEL_THEN_PAIR = re.compile(
    rf"(?:(?:(?<=/)|(?<=/ )){_LABEL_PASSWORD}|(?:(?<=[:,])|(?<=[:,] )){_LABEL_PASSWORD}(?=[ \t]*[)\]]))"
    # (Bracketed, Markdown's bold around the bracket or the separator; not bracketed, `=` or nothing:
    # "user/pass: x" is slash-label-pair's.)
    r"(?:(?P<close>[ \t]*[)\]])\*{0,2}(?:(?P<sep>[ \t]*[:=]\*{0,2}[ \t]*|[ \t]+-[ \t]+)|[ \t]+)|(?P<eq>[ \t]*=[ \t]*)|[ \t]+)"
    r"(?:\\?[`'\"])?[\w@][\w@.+-]{0,63}(?:\\?[`'\"])?(?P<between>[ \t]*[/:,][ \t]*)(?:\\?[`'\"])?(?P<s>[^\s/`'\"\\]{4,}?)(?:\\?[`'\"])?"
    r"(?=[.,;:?)]*(?:\s|\Z|\\[nrt]|\"))"
)
# (Not after a path's `/`, `.`, `~` or `\`: `app/models/user/password lib/x` is a path. An opening
# bracket only after a space or a line's start: `f(user/pass)`, `x[user/pass]` are code.)
_LABEL_USER_HALF_BEFORE = re.compile(
    r"(?:(?<![\w.\-/~\\])|(?<=\\[nrt]))(?P<open>(?<![\w.])[(\[][ \t]*)?(?i:user(?:[ _-]?name)?|login)(?P<halves>[ \t]*[/:,][ \t]*)\Z"
)
_LABEL_THEN_PAIR_GATES = tuple(
    (anchor, rf"(?:(?<=/{anchor})|(?<=/ {anchor})){rest}(?:[ \t]*[)\]]|[ \t]*=|[ \t]+(?:\\?[`'\"])?[\w@])"
             rf"|(?:(?<=[:,]{anchor})|(?<=[:,] {anchor})){rest}[ \t]*[)\]]")
    for anchor, rest in _LABEL_PASSWORD_SPELLINGS
)
_CLOSING_BRACKET = {"(": ")", "[": "]"}
# A command that takes paths, on the label's line before it: `mv user/password lib/Auth2x`,
# `git mv -f user/pass src/Cfg2`, Windows' `move`/`xcopy /y`, `svn mv`, `hg mv`: the label and the
# pair are two paths. (A list, not any first word of a line: "mvp user/password root/PW" and
# "creds user/password root/PW" are prose that hands a pair over, and nothing in the text tells
# an unknown word from a program; words that start prose, `type`, `copy`, `open a`, stay out.)
_PATH_COMMAND_BEFORE = re.compile(
    # (A string's opening quote starts one too: `{"stdout": "mv user/password lib/x"}`.)
    r"(?m)(?:^|(?<=\\n)|[;&|`(\"]|\$[ \t])[ \t]*(?:sudo[ \t]+)?(?:(?:git|svn|hg)[ \t]+)?"
    r"(?:mv|cp|ln|ls|cat|rm|rmdir|cd|mkdir|touch|diff|vim?|nano|code|open|less|head|tail|chmod|chown|rsync|scp|tar|find|grep|rg|stat|du|file|tree|add"
    r"|move|ren|rename|del|erase|xcopy|robocopy|mmv|emacs|subl|bat|cmp|wc|zip|unzip)"
    r"(?:[ \t]+[-/][^\s]*)*[ \t]+\Z"
)
_PATH_COMMAND_REACH = 80


def _label_brackets_match(label: "re.Match[str]", m: "re.Match[str]") -> bool:
    """Whether the label is bracketed on both sides, `(...)` or `[...]`, or on neither."""
    opening, closing = label.group("open"), m.group("close")
    if opening is None or closing is None:
        return opening is None and closing is None
    return _CLOSING_BRACKET[opening[0]] == closing.strip()


def _replace_label_then_pair(text: str, m: "re.Match[str]") -> Optional[str]:
    label = _LABEL_USER_HALF_BEFORE.search(text, max(0, m.start() - 30), m.start())
    if label is None:
        return None  # "file/pass admin/x", "app/models/user/password lib/x"
    if not _label_brackets_match(label, m):
        return None  # "creds [user/pass): x", "(user/pass x": no label of this shape
    slash_label = label.group("halves").strip() == "/"
    if not slash_label and label.group("open") is None:
        return None  # "creds user:pass admin:x": a URL's `user:pass`, a sentence's "username, password"
    value = m.group("s").rstrip(_SENTENCE_STOPS)
    judged = _without_glued_bang(value)
    if m.group("between").strip() == ",":
        # (After any label of this shape, "creds (user/pass): admin, PW" as "login (username,
        # password): admin, PW": a password that mixes letters with digits or symbols.)
        if not _printed_secret(judged):
            return None  # "login (username, password): name, email", "creds (user/pass): admin, bob": a list
    if value.startswith(_MARKER_OPEN):
        return None  # "USER/PASSWORD=root/[REDACTED:assignment]": the assignment rule's already
    if m.group("sep") is not None or m.group("eq") is not None:
        # (After a separator, as slash-label-pair reads it: the label names the second half a password, a word too.)
        if not _printed_secret(judged) and not _plausible_secret(_CHOSEN, judged):
            return None
    elif not _printed_secret(judged):
        return None  # "the user/password form root/home", "user/password src/config": with no separator, prose or a path
    elif label.group("open") is None and _PATH_COMMAND_BEFORE.search(text, max(0, label.start() - _PATH_COMMAND_REACH), label.start()):
        return None  # "mv user/password lib/Auth2x": a command's two paths
    start = m.start("s")
    return text[m.start() : start] + _PROSE_MARK + text[start + len(value) : m.end()]


def _replace_use_to_log_in(text: str, m: "re.Match[str]") -> Optional[str]:
    # (The value runs to the space before `to`: a last `!` or `.` is the password's.)
    return _replace_group(text, m, "s", _PROSE_MARK) if _printed_secret(m.group("s")) else None


def _replace_slash_label_pair(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _SLASH_LABEL_BEFORE.search(text, max(0, m.start() - 30), m.start()):
        return None  # "file/pass: x", "/etc/pw: y"
    value = m.group("s").rstrip(_SENTENCE_STOPS)
    judged = _without_glued_bang(value)
    if m.group("between").strip() in ("", ","):
        if not _printed_secret(judged):
            return None  # "user/password: admin only", "user/password: see the vault", "user/pass: name, email"
    elif not _printed_secret(judged) and not _plausible_secret(_CHOSEN, judged):
        return None  # "user/pass: admin/<password>", "admin/changeme"
    # (The label names the pair's second half a password: a word goes too, "admin/hunter".)
    start = m.start("s")
    return text[m.start() : start] + _PROSE_MARK + text[start + len(value) : m.end()]


def _replace_login_pair(text: str, m: "re.Match[str]") -> Optional[str]:
    value = m.group("s").rstrip(_SENTENCE_STOPS)
    judged = _without_glued_bang(value)
    if not _printed_secret(judged):
        return None  # "login as user/pass", "login with bob/alice"
    start = m.start("s")
    return text[m.start() : start] + _PROSE_MARK + text[start + len(value) : m.end()]


# Letters with a digit or a symbol that words do not hold (a hyphen, a dot, an apostrophe they do:
# "re-processing", "defined.").
_MIXED = re.compile(r"(?=[^\s]*[A-Za-z])(?=[^\s]*[0-9!@#$%^&*+=~|<>?])")


# What an error message says a secret is, in quotes as often as not: 'the password is "invalid"',
# 'the token is "expired"'. A quoted word of these is a state, not the value.
_STATUS_WORDS = frozenset(
    """
    invalid incorrect expired revoked missing empty wrong correct valid unset changed hidden masked
    blank unknown rejected accepted disabled enabled locked weak strong mismatched malformed
    """.split()
)


_SET_TO_VERB = re.compile(r"(?i:\b(?:set|sets|setting|change[sd]?|changing|reset|resets|resetting|update[sd]?|updating|rotated?)(?:[ \t]+\w+){0,2}[ \t]+)\Z")


_SET_IN_SPAN = re.compile(r"[ \t](?:set|changed|reset|updated)[ \t]+to[ \t]")


def _replace_prose_secret(text: str, m: "re.Match[str]") -> Optional[str]:
    span = text[m.start() : m.start("s")]
    if " to " in span and not _SET_IN_SPAN.search(span) and not _SET_TO_VERB.search(text, max(0, m.start() - 40), m.start()):
        return None  # "convert the token to base64": only setting one says what it is now
    value = m.group("s").rstrip(_SENTENCE_STOPS)
    judged = _without_glued_bang(value)
    if value.startswith((_MARKER_OPEN, "/", "./", "~", "$", "http")) or _is_placeholder(judged):
        return None
    if value[0] in _PROSE_OPENERS:
        # `<password>`, `(see below)`, `{{ pw }}`, `[redacted]`: a placeholder or an aside. A
        # password may open with one too, unclosed (`<Gf8yy$Rq2`, `(9fRqgr=vK2`): then what
        # follows must look random or mix case and digits.
        rest = judged[1:]
        if _PROSE_OPENERS[value[0]] in value or not (_looks_random(rest) or _mixes_case_and_digits(rest)):
            return None
    if len(judged) > 2 and judged[0] == judged[-1] and judged[0] in "*_":
        return None  # Markdown's emphasis: "the token *must* be read"
    start = m.start("s")  # (a sentence's closing stop stays)
    # A word in quotes is a value handed over ('the password is "swordfish"'); a bare one is
    # prose ("the password is incorrect"): letters-only passwords stated bare are a known limit.
    quote = text[start - 1] if start > m.start() else ""
    quoted = quote in ("\"", "'", "`") and text[start + len(value) : start + len(value) + 1] == quote
    quoted_word = quoted and judged.isalpha() and judged.lower() not in _STATUS_WORDS
    if not (_MIXED.match(judged) or _looks_random(judged) or quoted_word or _ODD_CASE_AND_SYMBOL.search(judged)):
        return None
    if (_DOTTED_REF.fullmatch(judged) or _CODE_NAME.fullmatch(judged)) and not (_looks_random(judged) or _mixes_case_and_digits(judged)):
        return None  # a word, a path, a name in code: "the token is tokenizer.eos_token" ("kn.w5N4ixD" is none)
    return text[m.start() : start] + _PROSE_MARK + text[start + len(value) : m.end()]


_PROSE_MARK = marker("prose-secret")
_PROSE_OPENERS = {"<": ">", "(": ")", "{": "}", "[": "]"}
# A lower-case letter before an upper-case one inside the value, and punctuation that _MIXED does
# not count (`nZhR-CCNsQYi`, `ydfrknDiZA{Pyf`, `UtTXuFW:HGh`): a generated password with no digit.
_ODD_CASE_AND_SYMBOL = re.compile(r"(?=.*[a-z][A-Z])(?=.*[-{}\[\]:;.,\"'`\\/_()])")


def _mixes_case_and_digits(value: str) -> bool:
    """Upper and lower case letters and digits, eight characters or more: a generated password's
    mix, as no word and few names have it."""
    return (len(value) >= 8 and any(c.isdigit() for c in value) and any(c.isupper() for c in value)
            and any(c.islower() for c in value))

# A chat that names a variable and says what it holds now: "I've set `DB_PASSWORD` to `x` in
# .env", "Updated `API_KEY` to `x`", "The `SECRET_KEY` is now `x`", "set DB_PASSWORD to x". The
# name is code's (an upper-case or snake/camel name, or one in backticks) and a secret's; the
# value mixes letters with digits or symbols, or is a word in backticks; `to` only after a verb
# of setting ("pass `token` to `fetchUser`" hands a variable over).
_NAMED_IN_PROSE = re.compile(
    r"(?:_(?<=[0-9A-Z]_)(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|PW)|password|Password|PASSWORD|token|Token|secret|Secret|key|Key)"
    r"(?P<tail>[\w.-]{0,40}?)(?P<tick>`?)[ \t]+(?P<verb>to|is[ \t]+now|is|was|now)[ \t]+"
    r"(?P<open>`?)(?P<s>[^\s`\"'\\]{6,200}?)(?P=open)(?=[.,;:?)]*(?:\s|\Z))"
)
_NAMED_IN_PROSE_LOOK = r"(?=[\w.-]{0,40}`?[ \t]+(?:to|is(?:[ \t]+now)?|was|now)[ \t]+`?[^\s`\"'\\]{6})"
_NAMED_IN_PROSE_GATES = tuple((w, _NAMED_IN_PROSE_LOOK) for w in ("password", "Password", "PASSWORD", "token", "Token", "secret", "Secret", "key", "Key")) + (
    ("_", r"(?=(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|PW)" + _NAMED_IN_PROSE_LOOK[3:]),
)


def _replace_named_in_prose(text: str, m: "re.Match[str]") -> Optional[str]:
    name_start = _name_start(text, m.start())
    name = text[name_start : m.end("tail")]
    ticked = m.group("tick") == "`" and text[name_start - 1 : name_start] == "`"
    if not (ticked or "_" in name or _LOWER_UPPER.search(name)):
        return None  # "the token is x" is the prose rule's; a bare word is no variable
    if _name_kind(name) is None:
        return None
    if m.group("verb") == "to" and not _SET_TO_VERB.search(text, max(0, name_start - 40), name_start - (1 if ticked else 0)):
        return None
    value = m.group("s")
    judged = _without_glued_bang(value)
    if value.startswith((_MARKER_OPEN, "/", "./", "~", "$", "http", "<", "{", "(", "[")) or _is_placeholder(judged):
        return None
    quoted_word = m.group("open") == "`" and judged.isalpha() and judged.lower() not in _STATUS_WORDS
    if not (_MIXED.match(judged) or _looks_random(judged) or quoted_word) or _DOTTED_REF.fullmatch(judged) or _CODE_NAME.fullmatch(judged):
        return None
    return _replace_group(text, m, "s", _PROSE_MARK)


# --- Prose that names a secret printer and quotes what it printed: "I ran op read
# op://dev/db/password and got Tr0ub4dor3xq", "`pass show email/gmail` prints x", "echo
# $DB_PASSWORD gives me x", "vault kv get -field=password secret/db returned:\n x",
# "printenv DB_PASSWORD outputs x", "sops -d secrets.yaml shows x". The command must be one that
# `command_prints_secret` knows (the same table as a pasted `$ op read ...` session), a verb of
# printing must follow it, and the value must look made or chosen, as for prose-secret above:
# "and got an error", "returns 403", "prints nothing" stay.
# The command is read from its program up to that verb (200 characters at most). The programs:
# every secret printer of secret_output.py that prose names, and the file printers (`cat
# /run/secrets/db_password prints x`); `base64` is no program here, only a head (below).
_PROSE_PRINTERS = (
    r"(?:op|pass|gopass|vault|gcloud|aws|az|printenv|echo|printf|gh|glab|fly|flyctl|security|secret-tool|keyring"
    r"|kubectl|doppler|heroku|pulumi|terraform|sops|gpg|ansible-vault|openssl|pwgen|wg|rclone|netlify|railway"
    r"|cat|head|tail|less|more|bat|type|get-content|bw)"
)
# (`get` only after a subject or `and`: `vault kv get` is the command's own word; a verb is a
# whole word: `print-access-token` is too. After a quoted command, `is` too: "`printenv X` is x".)
_PROSE_PRINT_VERB = (
    r"(?<![^\s,`'\"])(?:(?:(?:and|but|which|it|that|I|then|just|only|always|still)[ \t]+)*"
    r"(?:got|returns?|returned|prints?|printed|gives?|gave|outputs?|output|shows?|showed|says|said|yields?|yielded"
    r"|displays?|displayed|dumps?|dumped|spits?(?=[ \t]+out)|spat(?=[ \t]+out))"
    r"|(?:(?:and|but|then|I|we|you)[ \t]+)+(?:just[ \t]+)?gets?)"
    # (A colon after spaces only: the spaces without one are the value's, read once, after it.)
    r"(?=[ \t:\r\n])(?:[ \t]+(?:me|back|out|just|only))*(?:[ \t]*:)?"
)
_PROSE_PRINT_SEP = rf"(?:{_PROSE_PRINT_VERB}|(?<=[`'\"])[ \t]*:|(?<=[`'\"])[ \t]+(?:is|was)[ \t]|->|→|=>)"
# What may close a command before its verb: a quote, a comma ("`pass show x`, which prints y").
# (Spaces, a comma, spaces: written `[ \t]*,?[ \t]*`, a run of spaces split between the two every
# way, `pass show x prints` and 4,000 spaces took 19 s.)
_PROSE_CLOSE = r"[`'\"]?(?:[ \t]*,)?[ \t]*"
# Where the command is found (each head starts at the anchor its gate names, so the rule runs at
# those offsets alone): a program's own words that say it prints a secret (`pass show`, `op://`,
# `kv get`, `auth token`, `keyring get`, `secret-tool lookup`, `sops -d`, `openssl rand -hex`...),
# or the command's last word before the verb, when it names a secret (`printenv DB_PASSWORD
# outputs`, `cat /run/secrets/db_password prints`, `terraform output -raw db_password gives`):
# the secret words and the `_` of an upper-case name, anchors scanned for already, each with a
# look that the verb comes right after the word.
# (The word's rest is bounded and must end where the look says, so that `key=key=...` or a long
# run of name characters costs each anchor a few steps, not a scan to the end of the text.)
_PROSE_WORD_CHARS = r"[\w./:@%+~-]"
_PROSE_LAST_WORD_LOOK = rf"(?={_PROSE_WORD_CHARS}{{0,80}}(?!{_PROSE_WORD_CHARS}){_PROSE_CLOSE}{_PROSE_PRINT_SEP})"
_PROSE_UPPER_NAME_LOOK = rf"(?=[A-Z0-9_]{{1,40}}(?!{_PROSE_WORD_CHARS}){_PROSE_CLOSE}{_PROSE_PRINT_SEP})"
_PROSE_LAST_WORD_ANCHORS = ("password", "Password", "PASSWORD", "passwd", "pass", "secret", "Secret", "token", "Token", "key", "Key", "pw")
_PROSE_COMMAND_STARTS: tuple[tuple[str, str, str], ...] = (  # (anchor, head from the anchor on, gate look)
    ("pass", r"pass[ \t]+(?:show|otp|generate)(?=[ \t])", r"(?=[ \t]+(?:show|otp|generate)[ \t])"),
    (":", r":(?<=op:)//", r"(?<=op:)(?=//)"),  # op read op://vault/item/field
    ("kv", r"kv(?<![\w-]kv)[ \t]+get(?=[ \t])", r"(?<![\w-]kv)(?=[ \t]+get[ \t])"),
    (
        "token",
        r"token(?:(?<=auth token)|(?<=-access-token)|(?<=-identity-token)|(?<=create token)|(?<=print token))(?=[ \t`'\",])",
        r"(?:(?<=auth token)|(?<=-access-token)|(?<=-identity-token)|(?<=create token)|(?<=print token))(?=[ \t`'\",])",
    ),
    # (`show` is the command's: "az keyvault secret show --name db" must not read it as the verb.)
    (
        "secret",
        r"secret(?:(?<=keyvault secret)[ \t]+show|(?<=get-secret)-value|(?<=gcloud secret)s[ \t]+versions"
        r"|(?<=doppler secret)s|-tool[ \t]+lookup)(?=[ \t])",
        r"(?:(?<=keyvault secret)(?=[ \t]+show)|(?<=get-secret)(?=-value)|(?<=gcloud secret)(?=s[ \t]+versions)"
        r"|(?<=doppler secret)(?=s[ \t])|(?=-tool[ \t]+lookup[ \t]))",
    ),
    ("key", r"key(?<![\w-]key)ring[ \t]+get(?=[ \t])", r"(?<![\w-]key)(?=ring[ \t]+get[ \t])"),
    ("$", r"\$(?:(?<=echo \$)|(?=\{?(?i:env):))", r"(?<=echo \$)|(?=\{?(?i:env):)"),  # PowerShell's `$env:DB_PASSWORD`
    ("password", r"password(?:(?<=find-generic-password)|(?<=find-internet-password))", r"(?<=find-generic-password)|(?<=find-internet-password)"),
    ("pw", r"pw(?<![\w-]pw)gen(?=[ \t])", r"(?<![\w-]pw)(?=gen[ \t])"),
    # `aws configure get aws_secret_access_key`; `kubectl get secret db -o jsonpath=... | base64 -d`
    # (command_prints_secret then decides: `base64 -d` of anything else is no secret printer).
    ("configure", r"configure[ \t]+get(?=[ \t])", r"(?=[ \t]+get[ \t])"),
    ("base64", r"base64[ \t]+(?:-d|--decode|-D)(?![\w-])", r"(?=[ \t]+(?:-d|--decode|-D)(?![\w-]))"),
    ("rclone", r"rclone(?<![\w.-]rclone)[ \t]+(?:obscure|reveal)(?=[ \t])", r"(?<![\w.-]rclone)(?=[ \t]+(?:obscure|reveal)[ \t])"),
    # (A flag after a space, at the `-` that the short-flag rules scan for: `sops -d`, `gpg
    # --decrypt`, `aws ssm get-parameter ... --with-decryption`, `op item get x --reveal`,
    # `openssl rand -hex 32`.)
    (
        "-",
        r"-(?:(?<=[ \t]-)(?:d|-decrypt|-with-decryption|-reveal)|(?<=rand[ \t]-)(?:hex|base64))(?=[ \t])",
        r"(?:(?<=[ \t]-)(?=d[ \t]|-decrypt[ \t]|-with-decryption[ \t]|-reveal[ \t])|(?<=rand[ \t]-)(?=hex[ \t]|base64[ \t]))",
    ),
    *((word, word + _PROSE_LAST_WORD_LOOK, _PROSE_LAST_WORD_LOOK) for word in _PROSE_LAST_WORD_ANCHORS),
    # (`DB_PASSWORD`, `GITHUB_TOKEN`, `API_KEY`: at the `_` inside an upper-case name that ends
    # the word, which the `_` gate's guard for such names lets through.)
    ("_", r"_(?<=[A-Z0-9]_)" + _PROSE_UPPER_NAME_LOOK, r"(?<=[A-Z0-9]_)" + _PROSE_UPPER_NAME_LOOK),
)
_PROSE_COMMAND_OUTPUT = re.compile(
    # (The rest of the command word by word, at most 12 more: the verb is tried at a word's start
    # only, not at every character.)
    rf"(?:{'|'.join(head for _, head, _ in _PROSE_COMMAND_STARTS)})"
    rf"(?P<rest>(?:[^\s`'\"]{{1,200}}(?![^\s`'\"]))?(?:[ \t]+[^\s`'\"]{{1,200}}(?![^\s`'\"])){{0,12}}?){_PROSE_CLOSE}"
    # (The value may open the next line, an escaped one too: "gives me:\\nx".)
    rf"{_PROSE_PRINT_SEP}[ \t]*(?:\r?\n[ \t]*|(?:\\r)?\\n[ \t]*)?{_PROSE_VALUE}"
)
_PROSE_PROGRAM = re.compile(rf"(?<![\w$-])(?:{_PROSE_PRINTERS}[ \t]|\$\{{?(?i:env):)")
_PROSE_COMMAND_REACH = 160
_PROSE_COMMAND_GATES = tuple((anchor, look) for anchor, _, look in _PROSE_COMMAND_STARTS)
# The command pasted on a line of its own (below) is found through the program's own words only.
_BARE_COMMAND_HEADS = (
    r"(?:pass[ \t]+(?:show|otp)[ \t]|op://|kv(?<![\w-]kv)[ \t]+get[ \t]"
    r"|(?:auth token|-access-token|-identity-token|create token)(?=[ \t`'\",])|auth:token(?=[ \t`'\",\r\n]|\Z)"
    r"|get[ \t]+password(?<=bw get password)(?=[ \t])"
    r"|keyvault secret(?=[ \t]+show)|get-secret(?=-value)|gcloud secret(?=s[ \t]+versions)"
    r"|echo \$|find-generic-password|configure[ \t]+get[ \t]|base64[ \t]+(?:-d|--decode|-D)(?![\w-]))"
)
_BARE_COMMAND_GATES = (
    ("pass", r"(?=[ \t]+(?:show|otp)[ \t])"),
    (":", r"(?<=op:)(?=//)"),
    ("kv", r"(?<![\w-]kv)(?=[ \t]+get[ \t])"),
    ("token", r"(?:(?<=auth token)|(?<=-access-token)|(?<=-identity-token)|(?<=create token))(?=[ \t`'\",])|(?<=auth:token)(?=[ \t`'\",\r\n]|\Z)"),
    ("password", r"(?<=bw get password)(?=[ \t])"),
    ("secret", r"(?:(?<=keyvault secret)(?=[ \t]+show)|(?<=get-secret)(?=-value)|(?<=gcloud secret)(?=s[ \t]+versions))"),
    ("$", r"(?<=echo \$)"),
    ("password", r"(?<=find-generic-password)"),
    ("configure", r"(?=[ \t]+get[ \t])"),
    ("base64", r"(?=[ \t]+(?:-d|--decode|-D)(?![\w-]))"),
)
_COMMAND_OUTPUT_MARK = marker("command-output")

# The same without a verb or a prompt: the command pasted on a line of its own and what it
# printed on the next ("I ran:\nop read op://dev/db/password\nTr0ub4dor3xq\nwhy does it fail?").
# A script's next line is a command, words with spaces (`echo done`), or a keyword (`fi`); a
# secret printed is one token, and it must mix letters with digits or symbols. (Found through the
# gates above: the command holds one of their heads.)
# (The command line is read _BARE_COMMAND_REACH characters at most on each side of its head: a
# long line holding a head every few words, `pass show pass show ...`, was read to its end from
# each of them.)
_BARE_COMMAND_REACH = 300
_BARE_COMMAND_OUTPUT = re.compile(
    rf"(?m)^[ \t]*(?P<cmd>(?={_PROSE_PRINTERS}[ \t])[^\r\n`]{{0,{_BARE_COMMAND_REACH}}}?{_BARE_COMMAND_HEADS}"
    rf"[^\r\n`]{{0,{_BARE_COMMAND_REACH}}}?)[ \t]*\r?\n"
    r"[ \t]*(?P<s>[^\s`'\"$#/\\\[-][^\s`'\"]{5,})[ \t]*\r?$"
)


def _printed_secret(value: str) -> bool:
    """Whether a word a secret printer printed, as quoted, looks like the secret and not like
    what else it prints ("permission denied", "403", a path, a variable's name, a placeholder)."""
    if value.startswith((_MARKER_OPEN, "/", "./", "~", "$", "<", "{", "(", "[")) or _is_placeholder(value):
        return False
    return bool(_MIXED.match(value) or _looks_random(value)) and not (
        _DOTTED_REF.fullmatch(value) or _CODE_NAME.fullmatch(value)
    )


def _replace_bare_command_output(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _printed_secret(m.group("s")) or not command_prints_secret(m.group("cmd")):
        return None
    return _replace_group(text, m, "s", _COMMAND_OUTPUT_MARK)


def _replace_prose_command_output(text: str, m: "re.Match[str]") -> Optional[str]:
    value = m.group("s").rstrip(_SENTENCE_STOPS)
    judged = _without_glued_bang(value)
    if not _printed_secret(judged):
        return None  # "and got permission denied", "returns 403", "prints DB_PASSWORD"
    if "\\n" in text[m.start() : m.end("rest")]:
        return None  # `x "cat key.txt\nthe build says: x\nok"`: two lines, no command (as `_COMMAND_END` reads them)
    line = _line_prefix(text, m.start())[-_PROSE_COMMAND_REACH:]
    command = line + text[m.start() : m.end("rest")]
    program = None
    for found in _PROSE_PROGRAM.finditer(command):
        if found.start() > len(line):
            break
        program = found  # the last program that starts at or before the head (`pass` of `pass show`)
    if program is None or not command_prints_secret(command[program.start() :]):
        return None  # "pass the token through and get a new one"
    start = m.start("s")
    return text[m.start() : start] + _COMMAND_OUTPUT_MARK + text[start + len(value) : m.end()]


# --- Defaults: a literal that stands in for a secret when its variable is unset ---
# A shell or Compose default (`${POSTGRES_PASSWORD:-hunter2}`, `${API_TOKEN-x}`, `${PW:=x}`), a
# Spring placeholder's (`${db.password:hunter2}`), a Helm or Jinja template's (`{{ .Values.db.password
# | default "hunter2" }}`, `{{ api_key | default('x') }}`): the literal is the secret whenever the
# variable is missing, and it is written down in the file. (`${PW:?unset}` is an error message,
# `${PW:+--password=$PW}` an alternative, neither a value.)
_VAR_DEFAULT_GATE = r"(?=\{[\w.-]{0,60}(?i:pass|pw|secret|token|key|auth|salt|cred)[\w.-]{0,30}(?::-|:=|-|=|:(?![-=?+]))[^\s}])"
_VAR_DEFAULT = re.compile(
    rf"\${_VAR_DEFAULT_GATE}\{{(?P<name>[A-Za-z_][\w.-]{{0,80}}?)(?::-|:=|-|=|:(?![-=?+]))(?P<s>[^\s{{}}$\"'`\\]{{1,200}})\}}"
)
_TEMPLATE_DEFAULT = re.compile(r"\|[ \t]*default[ \t]*(?:\([ \t]*)?(?P<q>[\"'])(?P<s>[^\"'\r\n]{1,200})(?P=q)")
_TEMPLATE_DEFAULT_GATE = r"(?=[ \t]*default[ \t]*\(?[ \t]*[\"'])"
_TEMPLATE_NAME_BEFORE = re.compile(r"(?:\{\{-?|\{%-?)[^{}\r\n]{0,200}?(?P<name>[A-Za-z_][\w-]*)[\"'\]]?[ \t]*\Z")


def _mark_secret_value(text: str, m: "re.Match[str]", kind: Optional[str]) -> Optional[str]:
    """The match with its value (group `s`) marked, when the name read for it was a secret's
    (`kind`, from `_name_kind`) and the value can be one."""
    if kind is None or not _plausible_secret(kind, m.group("s")):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


def _replace_var_default(text: str, m: "re.Match[str]") -> Optional[str]:
    kind = _name_kind(m.group("name").rsplit(".", 1)[-1]) or _name_kind(m.group("name"))
    return _mark_secret_value(text, m, kind)


def _replace_template_default(text: str, m: "re.Match[str]") -> Optional[str]:
    before = _TEMPLATE_NAME_BEFORE.search(text, max(0, m.start() - 240), m.start())
    if before is None:
        return None
    kind = _name_kind(before.group("name"))
    return _mark_secret_value(text, m, kind)


# A literal fallback in code, after `or`, `||`, `??` or `?:`: `JWT_SECRET = process.env.JWT_SECRET
# || "supersecret123"`, `SECRET_KEY = os.getenv("SECRET_KEY") or "django-insecure-x"`, `$pw =
# getenv("PW") ?: "x"`, `token = ENV["TOKEN"] || "x"`. The assignment rule reads the expression
# before it as code and stops there. Found at the secret word of the name (or the `_` before an
# upper-case one), the name read back from there; the expression must read as code, not prose
# ("token: a string or 'none'").
_FALLBACK_REST = (
    r"(?P<tail>[\w.-]{0,30}?)[\"'\]]{0,2}[ \t]*(?::=|=(?![=>])|:(?![:=]))(?P<expr>[^\r\n]{1,200}?)"
    r"(?:[ \t]or|\|\||\?\?|\?:)[ \t]*(?P<q>[\"'])(?P<s>[^\"'\r\n\\]{1,200})(?P=q)"
)
_FALLBACK = re.compile(
    r"(?:_(?<=[0-9A-Z]_)(?:KEY|TOKEN|SECRET|PASS|PW)(?P<utail>[0-9A-Z_]{0,30}?)|password|Password|PASSWORD|secret|Secret|token|Token|key|Key)"
    + _FALLBACK_REST
)
_FALLBACK_LOOK = (
    r"(?=[\w.-]{0,30}[\"'\]]{0,2}[ \t]*(?::=|=(?![=>])|:(?![:=]))[^\r\n]{1,200}?(?:[ \t]or|\|\||\?\?|\?:)[ \t]*[\"'])"
)
_FALLBACK_GATES = tuple((w, _FALLBACK_LOOK) for w in ("password", "Password", "PASSWORD", "secret", "Secret", "token", "Token", "key", "Key")) + (
    ("_", r"(?=(?:KEY|TOKEN|SECRET|PASS|PW)" + _FALLBACK_LOOK[3:]),
)


def _replace_fallback(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.start("utail") >= 0 and m.group("tail"):
        return None  # `API_KEY.value = ...`: the `_` gate's guard reads an upper-case name only
    name = text[_name_start(text, m.start()) : m.end("tail")].rstrip(".-")
    kind = _name_kind(name)
    value = m.group("s")
    if kind is None or _PROSE_WORDS.search(m.group("expr")) or not _plausible_secret(kind, value):
        return None
    if _normalize_name(value) == _normalize_name(name):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# A declaration whose type or form stands between a secret's name and its literal: Go's `var
# password string = "pw"`, Visual Basic's `Dim apiKey As String = "k"`, C's `char password[] =
# "pw"` (`char pass[64] = "pw"`, an Arduino sketch's Wi-Fi password), and the C preprocessor's
# `#define WIFI_PASSWORD "pw"`. (The assignment rule reads the word before `=`: `string`, `]`.)
_DECLARED = re.compile(
    r"(?:_(?<=[0-9A-Z]_)(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|PW|PSK)|password|Password|PASSWORD|passwd|secret|Secret|token|Token"
    r"|key|Key|pass|Pass|PASS|PW)(?P<tail>\w{0,30}?)\*?"
    r"(?:[ \t]+(?:As[ \t]+)?[Ss]tring[ \t]*=|\[\d{0,4}\][ \t]*=|(?P<define>[ \t]+))[ \t]*\"(?P<s>(?:[^\"\\\r\n]|\\.){1,300})\""
)
_DECLARED_LOOK = r"(?=\w{0,30}?\*?(?:[ \t]+(?:As[ \t]+)?[Ss]tring[ \t]*=|\[\d{0,4}\][ \t]*=|[ \t]+(?=\"))[ \t]*\")"
_DECLARED_GATES = tuple((w, _DECLARED_LOOK) for w in ("password", "Password", "PASSWORD", "passwd", "secret", "Secret", "token", "Token", "key", "Key", "pass", "Pass", "PASS", "PW")) + (
    ("_", r"(?=(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|PW|PSK)" + _DECLARED_LOOK[3:]),
)
_DEFINE_BEFORE = re.compile(r"[+-]?[ \t]*#[ \t]*define[ \t]+\Z")
# A name that the language's syntax makes a binding with a space before its literal: Clojure's
# and EDN's keywords (`{:password "pw"}`), Elixir's module attributes (`@api_key "k"`), Lisp's
# `(def api-key "k")`, `(setq gptel-api-key "k")`, `(setf *password* "pw")`, Scheme's `(define ...)`.
_BINDING_BEFORE = re.compile(
    r"(?:(?:^|(?<=[\s{(\[,])):|(?:^|(?<=[\s]))@|\((?:def|defvar|defconst|defparameter|defcustom|define|setq|setq-default|setf|set!)[ \t]+\*?)\Z"
)
_LINE_ENDS = re.compile(r"[ \t]*(?:\r?\n|\Z)")


def _replace_declared(text: str, m: "re.Match[str]") -> Optional[str]:
    name_start = _name_start(text, m.start())
    name = text[name_start : m.end("tail")]
    binding = m.start("define") >= 0 and _BINDING_BEFORE.search(text, max(0, name_start - 30), name_start) is not None
    if m.start("define") >= 0 and not binding and not _DEFINE_BEFORE.fullmatch(_line_prefix(text, name_start)):
        # A DSL's call on a line of its own is a setting too: Gradle's `storePassword "pw"`, Chef's
        # `password "pw"`; elsewhere on a line, `token "x"` is prose or a DSL's argument.
        if _line_prefix(text, name_start).strip(" \t") or not _LINE_ENDS.match(text, m.end()):
            return None
    kind = _name_kind(name)
    return _mark_secret_value(text, m, kind)


# A literal typed into a password field by browser-automation code (end-to-end tests, scrapers):
# Playwright's `page.fill("#password", "pw")` / `page.getByLabel("Password").fill("pw")`,
# Puppeteer's `page.type('#password', 'pw')`, Cypress's `cy.get('#password').type('pw{enter}')`,
# Selenium's `find_element(By.ID, "password").send_keys("pw")`, WebdriverIO's `setValue`,
# TestCafe's `typeText`, Codeception's `$I->fillField('password', 'pw')`, Capybara's `fill_in
# "Password", with: "pw"`, Testing Library's `userEvent.type(passwordInput, 'pw')`. Found at the
# field's secret word: a chained typing call after it, or (the field an argument) a literal after
# the next comma, when a typing call opens before it on its line. (`{enter}`-style keys after the
# text are keys, not the password.)
_TYPING_VERBS = r"(?:fill|type|send_keys|sendKeys|setValue|typeText|pressSequentially|fillField)"
_TYPED_LITERAL = r"(?P<q>[\"'`])(?P<s>[^\"'`\\\r\n{]{1,200})(?:\{\w+\})*(?P=q)"
_TYPED_INTO_FIELD = re.compile(
    r"(?:password|Password|PASSWORD|passwd|passcode)(?:(?P<arg>[^\r\n;,{}]{0,80}?,[ \t]*(?:with:[ \t]*)?)"
    rf"|[^\r\n;{{}}]{{0,80}}?\.{_TYPING_VERBS}\([ \t]*){_TYPED_LITERAL}"
)
_TYPED_LOOK = rf"(?=[^\r\n;{{}}]{{0,80}}?(?:,[ \t]*(?:with:[ \t]*)?|\.{_TYPING_VERBS}\([ \t]*)[\"'`])"
_TYPING_CALL_BEFORE = re.compile(rf"(?:[.>]{_TYPING_VERBS}|(?<![\w.])fill_in)[ \t]*\(?[^\r\n;]{{0,80}}\Z")


def _replace_typed_into_field(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.start("arg") >= 0 and not _TYPING_CALL_BEFORE.search(text, max(0, m.start() - 120), m.start()):
        return None  # hash_password(user, "sha256"), f("password", "x"): no typing call
    if _is_placeholder(m.group("s")):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# A literal written to a file whose name says secret: `echo 'pw' > ~/.vault_pass`, `printf '%s'
# 'pw' > /run/secrets/db_password`, `echo ghp_x > ~/.github_token`, `echo -n k | sudo tee
# /etc/app/api_key`. The file's name (less its directory, leading dots and a .txt/.key/.secret
# ending) is read as a variable's would be.
_ECHO_TO_FILE = re.compile(
    r"(?:echo|printf)[ \t]+(?:-[neE]+[ \t]+)*(?:(?:\"%s(?:\\n)?\"|'%s(?:\\n)?')[ \t]+)?"
    r"(?:\"(?P<dq>[^\"\r\n$`\\]+)\"|'(?P<sq>[^'\r\n]+)'|(?P<uq>[^\s\"'$`|;&<>\\]+))"
    r"[ \t]*(?:>{1,2}|\|[ \t]*(?:sudo[ \t]+)?tee(?:[ \t]+-a)?)[ \t]*"
    r"(?P<path>(?:[^\s;&|\"'<>\\]{0,170}?[/._~-])?(?:password|passwd|pass|secret|token|key|Token|Secret|Password)[\w.-]{0,30})"
    r"(?=[ \t]*(?:\r?\n|\\n|[;&|)\"']|\Z))"
)
# (At `echo` and `printf`, with a redirection or a tee and a secret's word later on the line: at the
# secret words themselves, every `api_key)` of code opened the gate.)
_ECHO_TO_FILE_LOOK = r"(?<![\w.-]{word})(?=[ \t][^\r\n]{{0,300}}?(?:>|\btee\b)[^\r\n]{{0,200}}?(?:password|passwd|pass|secret|token|key|Token|Secret|Password))"
_FILE_NAME_ENDINGS = re.compile(r"(?:\.(?:txt|key|secret|pass|pwd|token))+\Z")


def _replace_echo_to_file(text: str, m: "re.Match[str]") -> Optional[str]:
    file_name = m.group("path").rsplit("/", 1)[-1].lstrip(".")  # ~/.vault_pass: vault_pass
    kind = _name_kind(_FILE_NAME_ENDINGS.sub("", file_name) or file_name) or _name_kind(file_name)
    group = next(g for g in ("dq", "sq", "uq") if m.start(g) >= 0)
    if kind is None or not _plausible_secret(kind, m.group(group)):
        return None
    return _replace_group(text, m, group, _ASSIGNMENT_MARK)


# An Ethereum-style private key (0x and 64 hex) handed to a wallet: ethers' `new Wallet("0x..")`,
# viem's `privateKeyToAccount("0x..")`, web3.py's `Account.from_key("0x..")`, Hardhat's `accounts:
# ["0x.."]`. The same shape is every transaction's and block's hash, so only there.
_WALLET_KEY = re.compile(r"0x(?<![\w]0x)(?P<s>[0-9a-fA-F]{64})(?![0-9a-fA-F])")
_WALLET_BEFORE = re.compile(
    r"(?:Wallet|from_key|privateKeyToAccount|fromPrivateKey|PrivateKey|privateKey|private_key|signer|Signer)[ \t]*\([ \t]*[\"'`]\Z"
    r"|accounts[\"']?[ \t]*[:=][ \t]*\[[ \t]*[\"'`]\Z"
)


def _replace_wallet_key(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _WALLET_BEFORE.search(text, max(0, m.start() - 80), m.start()):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# A change shown old -> new under a secret's name: Terraform's plan `~ admin_password = "a" ->
# "b"`. The assignment rule takes the old value; the new one is after the arrow.
_CHANGE_ARROW = re.compile(r"-(?<=[ \t]-)>[ \t]*\"(?P<s>[^\"\r\n\\]+)\"")
_CHANGE_BEFORE = re.compile(r"(?P<name>[\w.-]+)[\"']?[ \t]*[=:][ \t]*\"[^\"\r\n]*\"[ \t]+\Z")


def _replace_change_arrow(text: str, m: "re.Match[str]") -> Optional[str]:
    before = _CHANGE_BEFORE.search(_line_prefix(text, m.start()))
    kind = _name_kind(before.group("name")) if before else None
    return _mark_secret_value(text, m, kind)


# PHP's var_dump: `["password"]=>` and, on the next line, `string(10) "pw"`.
_VAR_DUMP = re.compile(r"=(?<=\]=)>\s{0,40}string\(\d{1,6}\)[ \t]*\"(?P<s>[^\"\r\n]*)\"")
_VAR_DUMP_NAME = re.compile(r"\[\"(?P<name>[^\"\r\n]{1,100})\"\]\Z")


def _replace_var_dump(text: str, m: "re.Match[str]") -> Optional[str]:
    name = _VAR_DUMP_NAME.search(text, max(0, m.start() - 110), m.start())
    kind = _name_kind(name.group("name")) if name else None
    return _mark_secret_value(text, m, kind)


# A two-column table's row whose key names a secret: Markdown's `| API_KEY | sk-... |`, psql's
# expanded display (`\x`: `password | pw`), a CLI's `KEY | VALUE` listing. A cell with spaces is
# prose (`| PASSWORD | The database password |`); under a password's name the value must mix
# letters with digits or symbols, as in prose (`| password | yes |` is a column of answers).
_TABLE_ROW = re.compile(r"\|(?:(?<=[\w. \t-][ \t]\|)|(?<=[\w.-]\|))[ \t]*(?P<s>[^|\s]{4,300})[ \t]*\|?[ \t]*(?=\r?\n|\Z)")
_TABLE_NAME = re.compile(r"[ \t]*\|?[ \t]*(?P<name>[\w.-]{1,80})[ \t]*\Z")


def _replace_table_row(text: str, m: "re.Match[str]") -> Optional[str]:
    name = _TABLE_NAME.fullmatch(_line_prefix(text, m.start()))
    kind = _name_kind(name.group("name")) if name else None
    value = m.group("s")
    if kind is None or not _plausible_secret(kind, value):
        return None
    if kind == _CHOSEN and not (_MIXED.match(value) or _looks_random(value)):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


# Bundler's credentials for a gem host, by environment: `BUNDLE_GEMS__CONTRIBSYS__COM=user:pw`
# (Sidekiq Pro's), `BUNDLE_RUBYGEMS__PKG__GITHUB__COM="bob:ghp_x"`: the host's dots as `__`.
_BUNDLE_HOST = re.compile(
    r"_(?<=BUNDLE_)(?:[A-Z0-9-]+__)+[A-Z0-9]+[\"']?[ \t]*[=:][ \t]*\\?[\"']?[^\s:\"'$\\]{1,64}:(?P<s>[^\s\"'\\]{4,200})"
)


# Ansible's `ansible-vault encrypt_string 'pw' --name 'db_password'`: the string it encrypts, in
# clear on the command line (its first word that is no flag or a flag's value).
_ENCRYPT_STRING = re.compile(
    r"_(?<=encrypt_)string(?P<rest>(?:[ \t]+(?:\\\"(?:[^\"\\\r\n]|\\[^\"])*\\\"|\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'|;&<>\\]+)){1,12})"
)
_VAULT_VALUE_FLAGS = frozenset({"--vault-id", "--vault-password-file", "--vault-pass-file", "--name", "-n", "--stdin-name",
                                "--encrypt-vault-id", "--output", "-J"})
_ARG = re.compile(r"\\\"(?:[^\"\\\r\n]|\\[^\"])*\\\"|\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'|;&<>\\]+")


def _replace_encrypt_string(text: str, m: "re.Match[str]") -> Optional[str]:
    if "ansible-vault" not in _line_prefix(text, m.start()):
        return None
    skip = False
    for arg in _ARG.finditer(m.group("rest")):
        word = arg.group()
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in _VAULT_VALUE_FLAGS
        else:
            if word.startswith('\\"'):  # `\\"pw\\"` in a JSON string
                new = None if len(word) < 5 or _is_placeholder(word[2:-2]) else '\\"' + _CLI_MARK + '\\"'
            else:
                new = _mark_arg(word, "")
            if new is None:
                return None
            at = m.start("rest") + arg.start() - m.start()
            whole = m.group(0)
            return whole[:at] + new + whole[at + len(word) :]
    return None


# Elasticsearch's `elasticsearch-setup-passwords auto` output: `PASSWORD elastic = pw`, one a user.
_ES_PASSWORD = re.compile(r"PASSWORD(?<![\w.-]PASSWORD)[ \t]+[\w.-]{1,64}[ \t]+=[ \t]+(?P<s>[^\s\"'\\]{4,200})")


# Redis's ACL: `ACL SETUSER alice on >pw ~cache:* +get` adds the password `pw` (`<pw` removes it,
# and names it in clear all the same).
_ACL_SETUSER = re.compile(r"(?:S(?<![\w]S)ETUSER|set(?<=[ \t]set)user)[ \t]+[^\s\"'\\]+(?P<rest>(?:[ \t]+[^\s\"'\\]+){1,30})")
_ACL_PASSWORD = re.compile(r"(?<=[ \t])[<>](?P<s>[^\s\"'\\]+)")


def _replace_acl_setuser(text: str, m: "re.Match[str]") -> Optional[str]:
    rest = m.group("rest")
    marked = _ACL_PASSWORD.sub(lambda p: p.group(0)[0] + (_REDIS_CONF_MARK if not _is_placeholder(p.group("s")) else p.group("s")), rest)
    return None if marked == rest else text[m.start() : m.start("rest")] + marked


# Jenkins's first start: "Please use the following password to proceed to installation:" and,
# after a blank line, the initial admin password (32 hex).
_JENKINS_PASSWORD = re.compile(r"password[ \t]+to[ \t]+proceed[ \t]+to[ \t]+installation:\s{1,10}(?P<s>[0-9a-f]{32})(?![0-9a-f])")


# Android's Gradle: `buildConfigField "String", "API_KEY", "\\"k\\""` (and `resValue "string",
# "maps_api_key", "k"`): a type, a name, and the value, in an escaped string for a String field.
_BUILD_CONFIG_FIELD = re.compile(
    r",(?<=[\"'],)[ \t]*[\"'](?P<name>[\w.]{1,80})[\"'][ \t]*,[ \t]*[\"'](?P<eq>\\?[\"'])?(?P<s>[^\"'\\\r\n]{4,300})(?(eq)\\?[\"'])[\"']"
)
_BUILD_CONFIG_BEFORE = re.compile(r"(?:buildConfigField|resValue)[ \t(]+[\"']\w+[\"']\Z")


def _replace_build_config_field(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _BUILD_CONFIG_BEFORE.search(text, max(0, m.start() - 60), m.start()):
        return None
    kind = _name_kind(m.group("name"))
    return _mark_secret_value(text, m, kind)


# "password:" in other languages, as a chat or a label writes it: `Passwort: pw`, `contraseña: pw`,
# `mot de passe : pw`, `senha: pw`, `пароль: pw`, `密码：pw`, `パスワード: pw`, `비밀번호: pw` (a
# full-width colon too). As in English prose, the value mixes letters with digits or symbols, or is
# quoted.
_FOREIGN_PASSWORD_WORDS = (
    "passwort", "kennwort", "contraseña", "contrasena", "senha", "mot de passe", "wachtwoord", "lösenord", "passord",
    "adgangskode", "salasana", "heslo", "hasło", "jelszó", "şifre", "parolă", "пароль", "密码", "密碼", "口令",
    "パスワード", "비밀번호", "mật khẩu", "kata sandi", "κωδικός", "password",
)
_FOREIGN_LABEL = re.compile(rf"(?i:{'|'.join(_FOREIGN_PASSWORD_WORDS)})[ \t]?\Z")
# (At a colon right after one of these words, a space between or not: one look-behind per length,
# as `_after` builds them. Their last two letters alone let through `response:`, `code:`, `else:`.)
_FOREIGN_LOOK = "(?i:" + "|".join(
    f"(?<=(?:{'|'.join(sorted(w for w in _FOREIGN_PASSWORD_WORDS if len(w) == n))}){sep}[:\uff1a])"
    for n in sorted({len(w) for w in _FOREIGN_PASSWORD_WORDS}) for sep in ("", " ")
) + ")"
# (The value is ASCII: in Chinese or Japanese the next word follows with no space, `密码：pw，谢谢`.)
_FOREIGN_PASSWORD = re.compile(
    r"[:\uff1a]" + _FOREIGN_LOOK + r"[ \t]*(?P<q>[`\"'\u201c\u300c]?)(?P<s>(?:(?![`\"'\\])[\x21-\x7e]){4,200}?)[`\"'\u201d\u300d]?"
    r"(?=[.,;?)]*(?:\s|\Z|[^\x00-\x7f]))"
)


def _replace_foreign_password(text: str, m: "re.Match[str]") -> Optional[str]:
    label = _FOREIGN_LABEL.search(text, max(0, m.start() - 20), m.start())
    if label is None or (label.group().rstrip(" \t").lower() == "password" and m.group()[0] == ":"):
        return None  # (English `password: x` with an ASCII colon is the assignment rule's to judge)
    return _replace_foreign_value(text, m)


def _replace_foreign_value(text: str, m: "re.Match[str]") -> Optional[str]:
    value = m.group("s")
    judged = _without_glued_bang(value)
    if _is_placeholder(judged) or value.startswith(("/", "http", "$", "<", "[")):
        return None
    if _YAML_LOCAL_TAG.match(text, m.start("s")):
        return None  # `Kennwort: !vault |`: Ansible's tag, the encrypted value on the lines after it
    if not (_MIXED.match(judged) or _looks_random(judged) or (m.group("q") and judged.isalpha())):
        return None
    return _replace_group(text, m, "s", _PROSE_MARK)


# The same words in a sentence that says what the password is, as English prose-secret reads
# "the password is X": "Le mot de passe est X", "Das Passwort lautet X", "la contraseña es X",
# "a senha é X", "het wachtwoord is X", "la password è X", "пароль — X". The value is judged as
# after a label: "Das Passwort ist falsch" and "la contraseña es incorrecta" stay.
_FOREIGN_IS = ("est", "ist", "lautet", "es", "era", "é", "è", "is", "är", "er", "on", "jest", "je", "este", "oli", "olur", "—")
# (Chinese and Japanese write the value right after the verb: 密码是X, パスワードはXです.)
_FOREIGN_IS_CJK = ("是", "为", "為", "は")
_FOREIGN_IS_REST = (rf"(?:[ \t]*(?:{'|'.join(_FOREIGN_IS)})(?:[ \t]*:)?[ \t]+"
                    rf"|[ \t]*(?:{'|'.join(_FOREIGN_IS_CJK)})[:\uff1a]?[ \t]*)")
_FOREIGN_IS_LOOK = rf"(?={_FOREIGN_IS_REST}[\x21-\x7e])"
_FOREIGN_PROSE = re.compile(
    rf"(?<![A-Za-z0-9_-])(?i:{'|'.join(w for w in _FOREIGN_PASSWORD_WORDS if w != 'password')}){_FOREIGN_IS_REST}"
    r"(?P<q>[`\"'\u201c\u300c\u00ab]?)(?P<s>(?:(?![`\"'\\])[\x21-\x7e]){4,200}?)[`\"'\u201d\u300d\u00bb]?"
    r"(?=[.,;?)]*(?:\s|\Z|[^\x00-\x7f]))"
)
# (Gated on each word as a sentence writes it: lower case, or capitalised at its start.)
_FOREIGN_PROSE_GATES = tuple(
    (spelling, _FOREIGN_IS_LOOK)
    for word in _FOREIGN_PASSWORD_WORDS if word != "password"
    for spelling in dict.fromkeys((word, word[0].upper() + word[1:]))
)


# A pentest tool's hit: NetExec's/CrackMapExec's `[+] corp.local\\admin:Pw (Pwn3d!)`, Metasploit's
# `[+] 10.0.0.5:445 - Success: 'CORP\\admin:Pw'`: a `DOMAIN\\user:password` that worked.
_TOOL_HIT = re.compile(r"\[\+\][^\r\n]{0,200}?(?<![\w.-])[\w.-]{1,64}\\{1,2}[\w.$-]{1,64}:(?P<s>[^\s'\"()\\]{1,200})")


# --- A YAML block scalar under a secret's name: `password: |` and the indented lines after it.
# (The name must end in a secret word, as the assignment rule's `:` gate reads it.)
_YAML_BLOCK = re.compile(
    rf"(?m)^(?P<indent>[ \t]*)(?:-[ \t]+)?(?P<name>[\w.-]+):{_after(_SECRET_WORDS, ':')}[ \t]*[|>][-+0-9]*[ \t]*(?:#[^\r\n]*)?\r?\n"
    r"(?P<body>(?:(?P=indent)[ \t]+\S[^\r\n]*(?:\r?\n|\Z))+)"
)
_YAML_BLOCK_LOOK = r"(?=[ \t]*[|>][-+0-9]*[ \t]*(?:#[^\r\n]*)?\r?\n)"


def _replace_yaml_block(text: str, m: "re.Match[str]") -> Optional[str]:
    kind = _name_kind(m.group("name"))
    body = m.group("body")
    if kind is None or kind == _WEAK and not _looks_made(body.strip()) or _is_placeholder(body.strip()):
        return None
    first = body[: len(body) - len(body.lstrip(" \t"))]
    ending = "\n" if body.endswith("\n") else ""
    return m.group(0)[: m.start("body") - m.start()] + first + _ASSIGNMENT_MARK + ending


# --- Writes to a key store whose key names a secret: `consul kv put app/db/password PW`, and
# `aws ssm put-parameter --name /db/password --value PW` (any name with `--type SecureString`).
_CONSUL_PUT = re.compile(r"kv[ \t]+put(?:[ \t]+-\S+)*[ \t]+(?P<name>[^\s=\"']+)[ \t]+(?P<s>[^\s\"'|;&@-][^\s\"'|;&]*)")
# (Azure's `az keyvault secret set --name db --value pw`: a Key Vault secret's value, whatever its name.)
_SSM_PUT = re.compile(r"(?:put-parameter|(?P<keyvault>keyvault secret[ \t]+set)(?=[ \t]))(?P<rest>[^\r\n|;&]*)")
# (A bare value stops at a backslash: in a JSON string `\n` ends its line.)
_SSM_VALUE = re.compile(r"--value(?:[ \t]+|=)(?P<s>\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'\\]+)")
_SSM_NAME = re.compile(r"--name(?:[ \t]+|=)[\"']?(?P<name>[^\s\"']+)")


def _replace_consul_put(text: str, m: "re.Match[str]") -> Optional[str]:
    leaf = re.split(r"[/:]", m.group("name"))[-1]
    if _name_kind(leaf) is None or _is_placeholder(m.group("s")):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


def _replace_ssm_put(text: str, m: "re.Match[str]") -> Optional[str]:
    rest = m.group("rest")
    value = _SSM_VALUE.search(rest)
    if value is None:
        return None
    name = _SSM_NAME.search(rest)
    leaf = name.group("name").rsplit("/", 1)[-1] if name else ""
    if "SecureString" not in rest and _name_kind(leaf) is None and m.group("keyvault") is None:
        return None
    token = value.group("s")
    new = _mark_arg(token, "")
    if new is None:
        return None
    start = m.start("rest") - m.start() + value.start("s")
    return m.group(0)[:start] + new + m.group(0)[start + len(token) :]


# --- rclone: `rclone config create NAME TYPE KEY VALUE ...` (or `KEY=VALUE`), `rclone config
# update NAME KEY VALUE ...`, `rclone config password NAME KEY VALUE`: a remote's settings as
# words, its password (`pass`), keys and tokens among them; and `rclone obscure PW`. (A flag's
# form, `--sftp-pass PW`, is the long-flag rule's; rclone.conf's `pass = x` the assignment's.)
_RCLONE = re.compile(
    r"rclone(?<![\w.-]rclone)(?:\.exe)?(?:[ \t]+--?[\w-]+(?:=\S*)?)*[ \t]+"
    r"(?P<sub>config[ \t]+(?:create|update|password)|obscure)(?=[ \t])(?P<rest>(?:[^\r\n|;&`()<>\\]|\\(?![nr]))*)"
)
# Keys that name a secret without saying so to is_secret_name: rclone's `pass`, `password2`
# (crypt's salt), Azure's and Swift's `key`, `sas_url`, a service account's JSON.
_RCLONE_SECRET_KEYS = frozenset({"pass", "password2", "key", "sas_url", "service_account_credentials"})
# Its config flags that take a value (`--state`, `--result`: the interactive protocol's).
_RCLONE_VALUE_FLAGS = frozenset({"--state", "--result", "--config"})


def _replace_rclone(text: str, m: "re.Match[str]") -> Optional[str]:
    close = _STRING_CLOSE.search(text, m.start("rest"), m.end())
    rest_end = close.start() if close else m.end()
    words, skip = [], False
    for w in _ARG_WORD.finditer(text, m.start("rest"), rest_end):
        if skip:
            skip = False
        elif w.group().startswith("-"):
            skip = "=" not in w.group() and w.group() in _RCLONE_VALUE_FLAGS
        else:
            words.append(w)
    sub = m.group("sub").split()[-1]
    if sub == "obscure":
        secrets = words[:1]
    else:
        secrets, i = [], 2 if sub == "create" else 1  # past NAME (and TYPE)
        while i < len(words):
            word = words[i].group().strip("\"'")
            key, eq, _ = word.partition("=")
            secret = key.lower() in _RCLONE_SECRET_KEYS or is_secret_name(key)
            if eq:
                if secret:
                    secrets.append((words[i], len(key) + 1 + (words[i].group()[0] in "\"'")))
                i += 1
            else:
                if secret and i + 1 < len(words):
                    secrets.append(words[i + 1])
                i += 2
    out, copied = [], m.start()
    for item in secrets:
        w, offset = item if isinstance(item, tuple) else (item, 0)
        token = w.group()[offset:]
        if offset and token.endswith(("\"", "'")) and w.group()[0] in "\"'":
            token = token[:-1]
        new = _mark_arg(token, "")
        if new is None:
            continue
        out += [text[copied : w.start() + offset], new]
        copied = w.start() + offset + len(token)
    if not out:
        return None
    return "".join(out) + text[copied : m.end()]


# Go's MySQL driver DSN, `user:pw@tcp(host:3306)/db` (`@unix(/path)`, `@tcp6(...)`): no scheme,
# so the URL rule's `://` never sees it. The user stays.
_GO_MYSQL_DSN = re.compile(r"(?<![\w.\[-])[\w.$-]+:(?P<s>[^\s@\\\"'`/:\[\]]+)@(?:tcp6?|unix)\(")

# Impacket's targets, `DOMAIN/user:password@host` (secretsdump.py, psexec.py, wmiexec.py,
# smbexec.py, mssqlclient.py, Kali's `impacket-secretsdump`, and any tool that copies the form):
# no scheme, so the URL rule never sees it. Found at the `@` (emails open that gate too: the rule
# starts at the `/`, and wants a domain at a word's start before it). The password runs to the
# last `@` before the host. A container image's `repo/name:tag@sha256:...` is no target.
_DOMAIN_TARGET = re.compile(
    r"/(?<=[\w-]/)[\w.$-]{1,64}:(?P<s>[^\s/'\"`\\]{1,200})@(?=[\w\[])(?!sha\d+:|sha\d+\b)"
)
# Impacket's scripts that take `DOMAIN/user:password` with no host (Kerberos ones: the DC comes by
# `-dc-ip`): GetUserSPNs.py corp.local/alice:PW, getTGT.py, GetNPUsers.py...
_IMPACKET_NO_HOST = (
    "GetUserSPNs", "GetNPUsers", "getTGT", "getST", "GetADUsers", "findDelegation", "addcomputer", "rbcd", "dacledit",
    "owneredit", "getPac", "raiseChild", "ticketer", "changepasswd", "DumpNTLMInfo", "GetLAPSPassword", "Get-GPPPassword",
)
_IMPACKET_LOOK = "|".join(f"(?<={name}\\.py)(?<![\\w.-]{name}\\.py)" for name in _IMPACKET_NO_HOST)
# (The gate's, right after the dot: `GetUserSPNs.` then `py`.)
_IMPACKET_DOT_LOOK = "|".join(f"(?<={name}\\.)(?<![\\w.-]{name}\\.)" for name in _IMPACKET_NO_HOST)
_IMPACKET_TARGET = re.compile(
    rf"(?:impacket-(?<![\w.-]impacket-)[\w-]+|\.py(?:{_IMPACKET_LOOK}))[ \t]+(?:[^\s\r\n|;&]+[ \t]+){{0,8}}?[\"']?[\w.-]{{1,64}}/[\w.$-]{{1,64}}:(?P<s>[^\s'\"`\\]{{1,200}})"
)
_DOMAIN_BEFORE = re.compile(r"(?:^|(?<=[\s\"'`=(,]))[\w.-]{1,64}\Z")


def _replace_domain_target(text: str, m: "re.Match[str]") -> Optional[str]:
    if not _DOMAIN_BEFORE.search(text, max(0, m.start() - 65), m.start()):
        return None  # a path's or a URL's `/x/user:pw@h` (the URL rule's), a word glued to something else
    value = m.group("s")
    if value.isdigit() or value.startswith(_MARKER_OPEN):
        return None
    return _group("cli-flag")(text, m)


def _replace_impacket_target(text: str, m: "re.Match[str]") -> Optional[str]:
    value = m.group("s")
    if "@" in value or value.startswith(_MARKER_OPEN):
        return None  # the `@` form is _DOMAIN_TARGET's
    return _group("cli-flag")(text, m)


# OpenVPN's inline credentials in a .ovpn profile: `<auth-user-pass>` (and `<http-proxy-user-pass>`)
# holds the user on its first line and the password on its second.
_OVPN_USER_PASS = re.compile(
    rf"<(?P<tag>auth-user-pass|http-proxy-user-pass)>[ \t]*{_NL}[ \t]*[^\s<\\][^\r\n<\\]*{_NL}[ \t]*(?P<s>[^\s<\\][^\r\n<\\]*?)[ \t]*{_NL}?[ \t]*</(?P=tag)>"
)


# Spring's password encoder under a name of its own (`encoder.matches("pw", hash)`): where the
# text declares the receiver one (`PasswordEncoder encoder`, `val encoder: PasswordEncoder`,
# `encoder = new BCryptPasswordEncoder()`), where the name says so (`pwEncoder`, `bcryptEncoder`),
# or where the call is `matches(literal, hash)`: two arguments, as only a PasswordEncoder's
# `matches` takes on an encoder (a TextEncoder has none). A TextEncoder's `encoder.encode("x")` stays.
_ENCODER_CALL = re.compile(rf"ncoder\.(?P<method>matches|encode|upgradeEncoding)\([ \t]*{_LITERAL_ARG}(?P<more>[ \t]*,)?")
_ENCODER_NAME_BEFORE = re.compile(r"[A-Za-z_$][\w$]*\Z")
_ENCODER_LOOKBACK = 5000
_PASSWORD_ENCODER_NAME = re.compile(r"(?i:pass|pw|bcrypt|argon|scrypt|pbkdf)")


def _replace_encoder_call(text: str, m: "re.Match[str]") -> Optional[str]:
    head = _ENCODER_NAME_BEFORE.search(text, max(0, m.start() - 80), m.start())
    name = (head.group() if head else "") + "ncoder"  # (this.encoder: the field's name)
    if (m.group("method") == "matches" and m.group("more")) or _PASSWORD_ENCODER_NAME.search(name):
        return _replace_positional_literal(text, m)  # encoder.matches("pw", hash), pwEncoder.encode("pw")
    declared = re.search(
        rf"PasswordEncoder\w*(?:<[^<>\r\n]*>)?[ \t]+{re.escape(name)}\b"
        rf"|\b{re.escape(name)}[ \t]*(?::[ \t]*\w*PasswordEncoder|=[ \t]*(?:new[ \t]+)?[\w.]*PasswordEncoder)",
        text[max(0, m.start() - _ENCODER_LOOKBACK) : m.start()],
    )
    return _replace_positional_literal(text, m) if declared else None


# Code that compares a secret-named variable to a literal: `if secret == "lit"`, `token === 'lit'`,
# `api_key != "lit"`, Java's `password.equals("lit")` and `"lit".equals(password)`. The literal is
# the secret the code checks against; judged as an assignment to that name would be (`password ==
# ""`, `token == None`, `token == "EOF"` in a tokenizer, `key == "Enter"` stay).
def _comparison_guard() -> str:
    """At a comparison's first `=`: a character before it that can end a secret's name (a secret
    word's last letter, a variant's: `_PROD`, `2`, `_dev`; a getter's `)`), a space between or none."""
    ends = {w[-1] for w in _SECRET_WORDS} | set("vgamn)0123456789")
    chars = "".join(sorted(ends | {c.upper() for c in ends if c.isalpha()}))
    # (The next or previous character first: most `=` are assignments, and fail there at once.)
    return rf"(?:(?==)(?:(?<=[{chars}] =)|(?<=[{chars}]=))|(?<=!=)(?:(?<=[{chars}] !=)|(?<=[{chars}]!=)))"


_COMPARISON = re.compile("=" + _comparison_guard() + r"(?<!==)(?:(?<=!=)=?|==?)(?!=)[ \t]*[bB]?(?P<q>[\"'`])(?P<s>(?:(?!(?P=q))[^\\\r\n]|\\.){4,300})(?P=q)")
_COMPARISON_LOOK = r"(?<!==)(?:(?<=!=)=?|==?)(?!=)[ \t]*[bB]?(?:\"(?:[^\"\\\r\n]|\\.){4}|'(?:[^'\\\r\n]|\\.){4}|`(?:[^`\\\r\n]|\\.){4})"
_EQUALS_CALL = re.compile(r"\.equals(?:IgnoreCase)?\([ \t]*(?P<q>[\"'])(?P<s>(?:(?!(?P=q))[^\\\r\n]|\\.){1,300})(?P=q)[ \t]*\)")
_EQUALS_YODA = re.compile(
    r"(?P<q>[\"'])(?P<s>(?:(?!(?P=q))[^\\\r\n]|\\.){1,300})(?P=q)\.equals(?:IgnoreCase)?\([ \t]*(?:[\w$]+\.){0,4}(?P<name>[A-Za-z_$][\w$]{0,80})(?:\(\))?[ \t]*\)"
)
# The literal first (`if "lit" == secret`, `'lit' !== token`, `("lit" == self.password)`): the name
# read after the operator, a whole name (`"x" == token.type` compares `type`, `"x" == tokens[0]` stays).
_COMPARISON_YODA = re.compile(
    r"(?P<q>[\"'`])(?P<s>(?:(?!(?P=q))[^\\\r\n]|\\.){4,300})(?P=q)[ \t]*(?:===?|!==?)[ \t]*"
    r"(?:[\w$]{1,80}\.){0,4}(?P<name>[A-Za-z_$][\w$]{0,80})(?:\(\))?(?![\w$.(\[])"
)
# (At its first `=`, a quote before the operator, a space between or none.)
_COMPARISON_YODA_GUARD = r"(?:(?==)(?:(?<=[\"'`] =)|(?<=[\"'`]=))|(?<=!=)(?:(?<=[\"'`] !=)|(?<=[\"'`]!=)))"
_COMPARISON_YODA_LOOK = r"(?<!==)(?:(?<=!=)=?|==?)(?!=)[ \t]*[A-Za-z_$]"
_COMPARED_REACH = 80
# A key or token a code compares to is long; shorter literals under such names are states and
# versions more often than keys (`if token == "abc123def"`, `token_version == "v2beta1"`).
_COMPARED_TOKEN_MIN = 10


def _compared_name(text: str, end: int) -> str:
    """The name whose value is compared at `end` (`self.api_key == `, `getPassword() != `)."""
    i = end
    floor = max(0, end - _COMPARED_REACH)
    while i > floor and text[i - 1] in " \t!":
        i -= 1
    if text[max(0, i - 2) : i] == "()":
        i -= 2
    stop = i
    while i > floor and (text[i - 1].isalnum() or text[i - 1] in "_$"):
        i -= 1
    return text[i:stop]


def _replace_compared_literal(text: str, m: "re.Match[str]", name: str) -> Optional[str]:
    if name.startswith(("get", "Get")) and len(name) > 3:
        name = name[3:]  # getPassword().equals("x")
    kind = _name_kind(name.lstrip("$"))
    value = m.group("s")
    if value != value.strip() or (kind != _CHOSEN and (len(value) < _COMPARED_TOKEN_MIN or any(c.isspace() for c in value))):
        return None  # (a token has no spaces and some length; a password may have spaces inside)
    if kind is None or kind == _SEED or not _plausible_secret(kind, value):
        return None
    return _replace_group(text, m, "s", _ASSIGNMENT_MARK)


def _replace_comparison(text: str, m: "re.Match[str]") -> Optional[str]:
    return _replace_compared_literal(text, m, _compared_name(text, m.start()))


def _replace_equals_call(text: str, m: "re.Match[str]") -> Optional[str]:
    return _replace_compared_literal(text, m, _compared_name(text, m.start()))


def _replace_equals_yoda(text: str, m: "re.Match[str]") -> Optional[str]:
    return _replace_compared_literal(text, m, m.group("name"))


def _replace_comparison_yoda(text: str, m: "re.Match[str]") -> Optional[str]:
    return _replace_compared_literal(text, m, m.group("name"))


# strongSwan's/Libreswan's ipsec.secrets: `: PSK "secret"`, `carol : EAP "pw"`, `: XAUTH "pw"`, quoted or
# as `0s<base64>`/`0x<hex>`; Cisco's IKE and AAA keys: `crypto isakmp key K address ...`, an ASA
# tunnel group's `ikev1 pre-shared-key K`, `tacacs-server key K`, `radius-server key 7 K`.
_IPSEC_SECRET = re.compile(
    r":[ \t]*(?:PSK|EAP|XAUTH|NTLM)[ \t]+(?:(?P<q>[\"'])(?P<s>[^\"'\r\n]+)(?P=q)|(?P<u>0[sx][A-Za-z0-9+/=]{4,}))"
)
_DEVICE_KEY = re.compile(
    r"(?:crypto[ \t]+isakmp[ \t]+key|pre-shared-key|(?:tacacs|radius)-server[ \t]+key)[ \t]+(?:[067][ \t]+)?(?P<s>[^\s\"'\\]+)"
)


def _replace_ipsec_secret(text: str, m: "re.Match[str]") -> Optional[str]:
    return _group("cli-flag", "s" if m.group("s") is not None else "u")(text, m)


# Bundler's credentials for a gem source: `bundle config [set] [--global|--local] HOST USER:PW`
# (Sidekiq Pro's `gems.contribsys.com`, GitHub Packages): the password goes, the user stays.
_BUNDLE_CONFIG = re.compile(
    r"bundle(?<![\w.-]bundle)[ \t]+config(?:[ \t]+(?:set|--global|--local))*[ \t]+[\"']?[^\s\"'-][^\s\"']*\.[^\s\"']+[\"']?"
    r"[ \t]+[\"']?[^\s:\"'\\]+:(?P<s>[^\s\"'\\]+)"
)


# A pair written with an infix: Kotlin's `mapOf("password" to "pw")`, Scala's `Map("api_key" -> "k")`
# (and Groovy's, Ruby's `"password" => "pw"`, which the assignment rule reads already).
_INFIX_PAIR = re.compile(
    r"(?:password|Password|PASSWORD|passwd|secret|Secret|token|Token|key|Key|pass|Pass|PASS|PW)"
    r"(?P<tail>\w{0,30}?)(?P<q>[\"'])[ \t]+(?:to|->)[ \t]+(?P<q2>[\"'])(?P<s>(?:(?!(?P=q2))[^\\\r\n]|\\.){1,300})(?P=q2)"
)
_INFIX_PAIR_LOOK = r"(?=\w{0,30}?[\"'][ \t]+(?:to|->)[ \t]+[\"'])"


def _replace_infix_pair(text: str, m: "re.Match[str]") -> Optional[str]:
    name_start = _name_start(text, m.start())
    if text[name_start - 1 : name_start] != m.group("q"):
        return None  # the name must be a string too: ("password" to "pw")
    return _mark_secret_value(text, m, _name_kind(text[name_start : m.end("tail")]))


# Composer's tokens per host in its JSON (auth.json's text, `COMPOSER_AUTH='{...}'`): `"github-oauth":
# {"github.com": "T"}`, `gitlab-token`, `gitlab-oauth`, `bearer`. The hosts stay, the tokens go.
_COMPOSER_TOKENS = re.compile(
    r"(?:-(?:oauth|token)|bearer)(?P<q>\\*\")[ \t]*:[ \t]*\{(?P<body>[^{}\r\n]{1,2000})\}"
)
_HOST_TOKEN = re.compile(r"(?P<q>\\*\")[^\"\\\s]{1,200}(?P=q)[ \t]*:[ \t]*(?P=q)(?P<s>[^\"\\\r\n]{1,500})(?P=q)")


def _replace_composer_tokens(text: str, m: "re.Match[str]") -> Optional[str]:
    if m.group(0).startswith("-") and text[max(0, m.start() - 6) : m.start()] not in ("github", "gitlab") and text[max(0, m.start() - 9) : m.start()] != "bitbucket":
        return None
    out, copied = [], m.start("body")
    for entry in _HOST_TOKEN.finditer(text, m.start("body"), m.end("body")):
        if _is_placeholder(entry.group("s")):
            continue
        out.append(text[copied : entry.start("s")] + _ASSIGNMENT_MARK)
        copied = entry.end("s")
    if not out:
        return None
    return text[m.start() : m.start("body")] + "".join(out) + text[copied : m.end()]


# A cookie jar written as a mapping in code or config: requests' `cookies={"sessionid": "v"}` and
# `cookies=dict(sid="v")`, a JS `cookies: {sid: "v"}`, a JSON `"cookies": {"sid": "v"}`, Django's
# test client `client.cookies = {...}`, an `auth_cookies = {...}`. A session cookie logs its
# holder in as a password does (as for _COOKIE), so every literal value of the mapping goes and
# the names stay. The mapping may span lines; it ends at its first closing brace or parenthesis.
_COOKIE_MAP = re.compile(
    r"(?<![A-Za-z0-9])(?:cookies|Cookies|COOKIES)\\*[\"']?[ \t]*[=:][ \t]*(?:\{|dict\()(?P<body>[^{}()]{1,2000})[})]"
)
# A value's quotes may be escaped (`{\"sid\": \"v\"}`: JSON printed inside a JSON string). Its
# key says when it is a cookie's setting (a session library's `cookies: {sameSite: "lax"}`), no value.
# (The key starts at a word's start, so a long word is read once, not from each of its letters.)
_MAP_VALUE = re.compile(r"(?<![\w-])(?P<key>[\w-]*)\\*[\"'`]?[ \t]*[:=][ \t]*(?P<q>\\*[\"'`])(?P<s>[^\"'`\\\r\n]{1,300})(?P=q)")
_COOKIE_SETTINGS = frozenset(a.replace("-", "") for a in _COOKIE_ATTRIBUTES) | {"name", "expiresin"}


def _replace_cookie_map(text: str, m: "re.Match[str]") -> Optional[str]:
    body_start = m.start("body")
    out, copied = [], body_start
    for value in _MAP_VALUE.finditer(text, body_start, m.end("body")):
        key = value.group("key").lower().replace("_", "").replace("-", "")
        if key in _COOKIE_SETTINGS or _is_placeholder(value.group("s")) or value.group("s").startswith(_MARKER_OPEN):
            continue
        out.append(text[copied : value.start("s")] + _COOKIE_MARK)
        copied = value.end("s")
    return text[m.start() : body_start] + "".join(out) + text[copied : m.end()] if out else None


# Cookie-signing keys as a list: Koa's `app.keys = ["k1", "k2"]`, cookie-session's and
# express-session's `keys: [...]`/`secret: [...]` in `cookieSession({...})`/`session({...})`,
# `cookieParser(["s1", "s2"])`: every literal in the list goes.
_KEY_LIST = re.compile(
    r"(?:keys(?<=app\.keys)[ \t]*=|keys(?<![\w.]keys)[ \t]*:|secret(?<![\w.]secret)[ \t]*:|cookieParser\()"
    r"[ \t]*\[(?P<body>[^\[\]\r\n]{1,500})\]"
)
_SESSION_BEFORE = re.compile(r"[sS]ession\([ \t]*\{[^{}()]{0,300}\Z")
_LIST_LITERAL = re.compile(r"(?P<q>[\"'`])(?P<s>[^\"'`\\\r\n]{4,300})(?P=q)")


def _replace_key_list(text: str, m: "re.Match[str]") -> Optional[str]:
    word = m.group(0)
    koa = word.startswith("keys") and text[max(0, m.start() - 4) : m.start()] == "app."
    if word.startswith(("keys", "secret")) and not koa and not _SESSION_BEFORE.search(text, max(0, m.start() - 300), m.start()):
        return None  # `keys: ["ctrl", "c"]`: a list of names, no session's keys
    body_start = m.start("body")
    out, copied, changed = [], body_start, False
    for lit in _LIST_LITERAL.finditer(text, body_start, m.end("body")):
        value = lit.group("s")
        if _is_placeholder(value) or value.startswith(_MARKER_OPEN):
            continue
        out.append(text[copied : lit.start("s")] + _POSITIONAL_LITERAL_MARK)
        copied, changed = lit.end("s"), True
    if not changed:
        return None
    return text[m.start() : body_start] + "".join(out) + text[copied : m.end()]


# A `user:password` literal encoded for a Basic Authorization header in code: JS's
# `btoa('bob:pw')`, Node's `Buffer.from('bob:pw').toString('base64')`, Python's
# `base64.b64encode(b"bob:pw")`, Go's `base64.StdEncoding.EncodeToString([]byte("bob:pw"))`,
# Java's `Base64.getEncoder().encodeToString("bob:pw".getBytes())`, C#'s
# `Convert.ToBase64String(Encoding.UTF8.GetBytes("bob:pw"))`, Ruby's `Base64.strict_encode64("bob:pw")`,
# PHP's `base64_encode("bob:pw")`; and PHP's `curl_setopt($ch, CURLOPT_USERPWD, "bob:pw")`. The user stays.
_ENCODED_CREDENTIALS = re.compile(
    r"(?:(?:btoa|b64encode|Buffer\.from|EncodeToString|encodeToString|encode64|base64_encode|ToBase64String)\([ \t]*"
    r"(?:[bB]|\[\]byte\([ \t]*|[\w.]*GetBytes\([ \t]*)?|USERPWD,[ \t]*)"
    # (Not a URI: `Buffer.from('data:image/png;base64,...')`, `btoa('https://x')`.)
    r"(?P<q>[\"'])(?!(?i:data|https?|mailto|urn|file|blob):)[\w.@+-]+:(?!//)(?P<s>[^\"'\s\\]+)(?P=q)"
)
_ENCODED_CREDENTIALS_GATES = (
    ("btoa(", ""),
    ("b64encode(", ""),
    ("Buffer.from(", ""),
    ("ncodeToString(", ""),
    ("ToBase64String(", ""),
    ("encode64(", ""),
    ("base64_encode(", ""),
    ("USERPWD", r"(?=,)"),
)
# Ansible's `password: "{{ 'pw' | password_hash('sha512') }}"`: a literal hashed at run time
# (inside the braces that otherwise mark a template).
_ANSIBLE_PASSWORD_HASH = re.compile(r"\{\{[ \t]*(?P<q>[\"'])(?P<s>[^\"'\r\n]+)(?P=q)[ \t]*\|[ \t]*password_hash\(")

# Secrets with a shape rather than a prefix.
_MORE_SHAPES: tuple[_Rule, ...] = (
    # PuTTY .ppk: the lines after `Private-Lines: N` are the key.
    _Rule(
        "putty-key",
        re.compile(rf"Private-Lines:[ \t]*[0-9]+(?:{_PK_NEWLINE})[ \t]*(?P<s>[A-Za-z0-9+/=]+(?:{_PK_NEWLINE}[ \t]*[A-Za-z0-9+/=]+)*)"),
        _group("private-key"),
        (("Private-Lines:", ""),),
    ),
    # base64 of "-----BEGIN": a PEM block inside YAML or JSON.
    _Rule("base64-pem", re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/]*={0,2}"), _replace_base64_pem, (("LS0tLS1CRUdJTi", ""),)),
    # base64 of '{"auths":': a docker config, registry passwords and all.
    _Rule("docker-config", re.compile(r"eyJhdXRocyI6[A-Za-z0-9+/]*={0,2}"), _replace_docker_config, (("eyJhdXRocyI6", ""),)),
    # base64 of '{"payload":"': `aws ecr get-login-password`'s output, a registry password for 12 hours.
    _Rule("aws-ecr-token", re.compile(r"eyJwYXlsb2FkIjoi[A-Za-z0-9+/]*={0,2}"), _whole("aws-ecr-token"), (("eyJwYXlsb2FkIjoi", ""),)),
    _Rule("aws-csv", _CSV_HEADER, _replace_csv, (("Secret access key", ""),)),
    _Rule("xml-element", _XML_ELEMENT, _replace_xml_element, (("</", _XML_GATE),)),
    _Rule("named-element", _NAMED_ELEMENT, _replace_named_element, (("name", _NAMED_ELEMENT_LOOK), ("key", _NAMED_ELEMENT_LOOK)), anchored=True),
    _Rule("plist-entry", _PLIST_ENTRY, _replace_named_element, (("</", r"(?<=</)(?=key>\s{0,200}<string>)"),)),
    _Rule("password-input", _INPUT_TAG, _replace_password_input, (("<input", ""), ("<INPUT", ""), ("<Input", ""))),
    _Rule(
        "named-value",
        _NAMED_VALUE,
        _replace_named_value,
        (("name", r"(?<![\w-]name)" + _NAMED_VALUE_LOOK), ("key", r"(?<![\w-]key)" + _NAMED_VALUE_LOOK)),
        anchored=True,
    ),
    _Rule("pgpass-printf", _PGPASS_PRINTF, _replace_pgpass_printf, (("printf", ""),)),
    _Rule("pgpass", _PGPASS, _replace_pgpass, ((":", _PGPASS_GATE),)),
    _Rule("pgpass-word", _PGPASS_WORD, _replace_pgpass_word, ((":", _PGPASS_WORD_GATE),)),
    _Rule("piped-password", _PIPED_PASSWORD, _replace_piped, (("|", rf"(?=[^\n|;&]{{0,200}}?{_STDIN_READER_WORDS})"),)),
    _Rule("here-string", _HERE_STRING, _replace_here_string, (("<<", _HERE_STRING_GATE),), anchored=True),
    _Rule("secure-string", _SECURE_STRING, _replace_secure_string, (("SecureString", ""),)),
    _Rule("secure-string", _PIPED_SECURE_STRING, _replace_piped_secure_string, (("SecureString", ""),)),
    _Rule("auth-pair", _AUTH_PAIR, _replace_auth_pair, ((",", _AUTH_PAIR_GATE),), anchored=True),
    # Microsoft Teams incoming webhooks.
    _Rule(
        "teams-webhook",
        re.compile(r"office\.com/webhook(?:b2)?/(?P<s>[A-Za-z0-9@/_-]{20,})"),
        _group("teams-webhook"),
        (("office.com/webhook", ""),),
    ),
)

_URL_SIGNATURE_AFTER = "|".join(f"(?<=[?&]{name}=)" for name in ("Signature", "signature", "X-Amz-Signature", "X-Goog-Signature"))

# Password hashes in crypt(3) form: .htpasswd's `bob:$apr1$salt$hash` and `$2y$05$...`, /etc/shadow's
# `root:$6$salt$hash:...`, `useradd -p '$6$...'`, Ansible's `password: "$6$..."`, yescrypt and
# argon2. A hash is not the password, but a weak password falls to a dictionary run over it.
# The scheme stays (`$6$`, `$2y$`), so that what was there can still be told. (A `$` starts a
# shell variable too, so the shapes are exact: `awk '{print $1$2}'` is no hash.)
_CRYPT_HASH = re.compile(
    r"\$(?<![\w$]\$)(?P<scheme>(?:1|5|6|apr1|md5|sha1)\$(?:rounds=[0-9]+\$)?(?=[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{22})"
    r"|2[abxy]?\$[0-9]{2}\$(?=[./A-Za-z0-9]{53})|y\$(?=[./A-Za-z0-9]+\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{43})"
    r"|argon2(?:id|i|d)\$(?=v=[0-9]+\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]{8,}\$[A-Za-z0-9+/]{16}))"
    r"(?P<s>[./A-Za-z0-9$=,+]+)"
)
_CRYPT_HASH_GATE = r"(?=(?:1|2[abxy]?|5|6|y|apr1|md5|sha1|argon2)\$|argon2)"

# --- The rest of a quoted value after an escaped quote inside it. The rules read a quoted value
# to its first quote, so a password holding a quote, written as its language escapes one, kept
# what came after the escape: shell's `'a'\''b'` (and `'a'"'"'b'`), SQL's, YAML's and
# PowerShell's doubled `'a''b'`, `"a\"b"`, PowerShell's `` "a`"b" ``, CSV's and VB's `"a""b"`,
# in `-p'...'`, `--password "..."`, `curl -u 'u:...'`, `ConvertTo-SecureString '...'`, `IDENTIFIED
# BY '...'`. Read after the marker: a marker that fills a quoted string from its opening quote
# (give or take a `user:` before it) and is followed by such an escape is the value's start, and
# the string runs on to its real closing quote, which stays.
_QUOTED_REST = re.compile(
    r"\](?:(?P<sq>(?:'\\''|'\"'\"'|'')[^'\r\n]*)+(?=')"
    r"|(?P<dq>(?:\\\"|\"\"|`\")(?:[^\"\\`\r\n]|[\\`][^\r\n])*)+(?=\"))"
)
_QUOTED_REST_LOOK = r"(?='\\''|'\"'\"'|''|\\\"|\"\"|`\")"
# (What may stand between the opening quote and the marker: `curl -u 'bob:[REDACTED]'`.)
_QUOTED_REST_HEAD = re.compile(r"[^\s\"'\\]{0,64}\Z")


def _replace_quoted_rest(text: str, m: "re.Match[str]") -> Optional[str]:
    mark = MARKER_PATTERN.search(text, max(0, m.start() - 40), m.start() + 1)
    while mark is not None and mark.end() != m.start() + 1:
        mark = MARKER_PATTERN.search(text, mark.end(), m.start() + 1)
    if mark is None:
        return None
    quote = "'" if m.start("sq") >= 0 else '"'
    head = _QUOTED_REST_HEAD.search(text, max(0, mark.start() - 64), mark.start())
    at = head.start() - 1
    if at < 0 or text[at] != quote:
        return None  # no quoted string opens right before the marker: `x[REDACTED]''` is not one
    if text[at - 1 : at] == "\\" or text[at - 1 : at] == quote:
        return None  # `\"[REDACTED]\"` (JSON in a string), `""[REDACTED]""` (CSV's inner quotes): those close it
    rest = m.group("sq") or m.group("dq")
    if not any(c.isalnum() for c in rest):
        return None
    return "]"


_RULES: tuple[_Rule, ...] = (
    _Rule("private-key", _PRIVATE_KEY, _replace_private_key, (("-", rf"(?=----BEGIN {_PK_LABEL}-----)"),)),
    _token("anthropic-key", "sk-ant-", r"(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}", ("-", "(?<=sk-)(?=ant-)")),
    _token("openrouter-key", "sk-or-v1-", r"[a-f0-9]{64}", ("-", "(?<=sk-)(?=or-v1-)")),
    # OpenAI: sk-<48 letters and digits>, sk-proj-/sk-svcacct-/sk-admin-<long, with - and _>.
    # Only those sub-prefixes may be followed by dashes: `sk-circle-2x-animation-delay` (CSS) is
    # words, and a key is never words. Without one, the body is one run of 20+ letters and
    # digits with a digit in it (also DeepSeek's and Moonshot's sk-<hex or alnum>).
    _token("openai-key", "sk-", r"(?:proj|svcacct|admin|None)-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}", ("-", "(?<=sk-)")),
    _token("openai-key", "sk-", r"(?!ant-)(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{20,}(?![A-Za-z0-9_-])", ("-", "(?<=sk-)")),
    _token("google-api-key", "AIza", r"[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", ("A", "(?=Iza)")),
    _token("google-oauth", r"ya29\.", r"[0-9A-Za-z_-]{20,}", (".", r"(?<=ya29\.)")),
    _token("google-oauth", "GOCSPX-", r"[0-9A-Za-z_-]{20,}", ("-", "(?<=GOCSPX-)")),
    # Google OAuth refresh tokens (`firebase login:ci`, `gcloud auth` credential files).
    _token("google-oauth", "1//0", r"[0-9A-Za-z_-]{40,}", ("1//0", "")),
    _token("huggingface-token", "hf_", r"[A-Za-z0-9]{30,}(?![A-Za-z0-9_])", ("_", "(?<=hf_)")),
    _token("stripe-key", "sk_(?:live|test)_", r"[A-Za-z0-9]{10,}", ("_", "(?<=sk_live_|sk_test_)")),
    _token("stripe-key", "rk_(?:live|test)_", r"[A-Za-z0-9]{10,}", ("_", "(?<=rk_live_|rk_test_)")),
    _token("stripe-key", "whsec_", r"[A-Za-z0-9]{24,}", ("_", "(?<=whsec_)")),
    _token("sendgrid-key", r"SG\.", r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}", (".", r"(?<=SG\.)")),
    _token("twilio-key", "SK", r"[0-9a-fA-F]{32}(?![0-9A-Za-z])", ("S", "(?=K[0-9a-fA-F]{32})"), left="A-Za-z0-9"),
    _token("npm-token", "npm_", r"[A-Za-z0-9]{36}(?![A-Za-z0-9])", ("_", "(?<=npm_)")),
    _token("pypi-token", "pypi-Ag", r"[A-Za-z0-9_-]{50,}", ("-", "(?<=pypi-)(?=Ag)")),
    _token("digitalocean-token", r"do[opr]_v1_", r"[a-f0-9]{64}", ("_", "(?<=do[opr]_v1_)")),
    _token("shopify-token", r"shp(?:at|ss|ca|pa)_", r"[a-fA-F0-9]{32}", ("_", "(?<=shp(?:at|ss|ca|pa)_)")),
    _Rule("aws-access-key-id", _AWS_KEY_ID, _replace_aws_key, (("A", "(?=KIA|SIA)"),)),
    _Rule(
        "azure-key",
        re.compile(r"(?:AccountKey|SharedAccessKey)=(?P<s>[A-Za-z0-9+/=]{16,})"),
        _group("azure-key"),
        (("=", "(?:(?<=AccountKey=)|(?<=SharedAccessKey=))"),),
    ),
    _Rule(
        "azure-sas",
        re.compile(r"sig=(?<=[?&]sig=)(?P<s>[A-Za-z0-9%+/=]{16,})"),
        _group("azure-sas"),
        (("=", "(?<=[?&]sig=)"),),
    ),
    # Signed URLs: S3's presigned `X-Amz-Signature=`, Google Cloud Storage's `X-Goog-Signature=`
    # (and its older `Signature=`), CloudFront's `Signature=`: whoever holds the URL can fetch (or
    # upload) the object until it expires. (The key id in `X-Amz-Credential` goes as an AWS key id,
    # `X-Amz-Security-Token` under its name.)
    _Rule(
        "url-signature",
        re.compile(rf"=(?:{_URL_SIGNATURE_AFTER})(?P<s>[A-Za-z0-9%+/=_~.-]{{16,}})"),
        _group("url-signature"),
        (("=", _URL_SIGNATURE_AFTER),),
        anchored=True,
    ),
    _token("github-token", r"gh[pousr]_", r"[A-Za-z0-9]{36,}", ("_", "(?<=gh[pousr]_)")),
    _token("github-token", "github_pat_", r"[A-Za-z0-9]{10}[A-Za-z0-9_]{12,}", ("_", "(?<=github_pat_)")),
    _token("gitlab-token", "glpat-", r"[A-Za-z0-9_-]{20,}", ("-", "(?<=glpat-)")),
    _token("gitlab-token", r"gl[rd]t-", r"[A-Za-z0-9_-]{20,}", ("-", "(?<=gl[rd]t-)")),
    # (xoxc- and xoxd-: a browser session's client token and cookie, as slackdump and scrapers use.)
    _token("slack-token", r"xox[abposrecd]-", r"[A-Za-z0-9%-]{10,}", ("-", "(?<=xox[abposrecd]-)")),
    _token("slack-token", "xapp-", r"[0-9]-[A-Za-z0-9-]{10,}", ("-", "(?<=xapp-)")),
    _Rule(
        "slack-webhook",
        re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9/_-]{8,})"),
        _group("slack-webhook"),
        ((".", r"(?<=hooks\.)(?=slack\.com/)"),),
    ),
    _Rule(
        "discord-webhook",
        re.compile(r"discord(?:app)?\.com/api/webhooks/(?P<s>[0-9]+/[A-Za-z0-9_-]{20,})"),
        _group("discord-webhook"),
        ((".", r"(?:(?<=discord\.)|(?<=discordapp\.))(?=com/api/webhooks/)"),),
    ),
    _token(
        "jwt",
        "eyJ",
        r"[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        (".", r"(?=eyJ[A-Za-z0-9_-]{5,}\.)"),
    ),
    *_MORE_TOKENS,
    *_MORE_SHAPES,
    _Rule("url-password", _URL_PASSWORD, _replace_url_password, ((":", r"(?<=[A-Za-z0-9]:)(?=//)"),)),
    _Rule("url-token-user", _URL_TOKEN_USER, _replace_url_token_user, ((":", r"(?:(?<=http:)|(?<=https:)|(?<=wss:))(?=//[A-Za-z0-9_-]{20,200}@)"),)),
    _Rule(
        "authorization",
        _AUTHORIZATION,
        _replace_authorization,
        (("=", _after(("authorization",), "=")), (":", _after(("authorization",), ":"))),
        anchored=True,
    ),
    _Rule("cookie", _COOKIE, _replace_cookie, ((":", _after(("cookie",), ":")),), anchored=True),
    _Rule("bearer-token", _BEARER, _group("bearer-token"), (("B", _BEARER_GATE), ("b", _BEARER_GATE))),
    _Rule("basic-credentials", _BASIC, _replace_basic, (("B", _BASIC_GATE), ("b", _BASIC_GATE))),
    _Rule("conn-string-password", _CONN_STRING_PASSWORD, _replace_conn_string_password, (("=", _CONN_STRING_LOOK),), anchored=True),
    _Rule("assignment", _ASSIGNMENT, _replace_assignment, _assignment_gates(), anchored=True),
    _Rule("suffixed-assignment", _SUFFIXED_ASSIGNMENT, _replace_suffixed_assignment, _suffixed_assignment_gates(), anchored=True),
    _Rule("assignment", _PUNCTUATED_VALUE, _replace_punctuated_value, _assignment_gates()[:2], anchored=True),
    _Rule("httpie-param", _HTTPIE_PARAM, _replace_httpie_param, (("=", _HTTPIE_PARAM_LOOK),), anchored=True),
    _Rule("r-assignment", _R_ARROW, _replace_r_arrow, (("-", r"(?=[ \t]*[\"'`\w])"),), anchored=True),
    _Rule("cli-flag", _CLI_FLAG, _replace_cli_flag, (("-", _CLI_FLAG_NAME[1:]),)),
    _Rule("cli-short-flag", _SHORT_FLAG, _replace_short_flag, (("-", _SHORT_FLAG_GATE),), anchored=True),
    _Rule("argv-flag", _ARGV_FLAG, _replace_argv_flag, (("-", _ARGV_GATE),), anchored=True),
    _Rule("spaced-setting", _SPACED_SETTING, _replace_spaced_setting, (("set", r"(?<![\w.-]set)(?:env|x)?[ \t]"), ("ENV", r"(?<![\w.-]ENV)[ \t]")), anchored=True),
    _Rule("spaced-setting", _SPACED_SETTING_MORE, _replace_spaced_setting,
          (("S", r"(?<![\w.-]S)(?=etEnv[ \t])"), ("_", r"(?:(?<=fastcgi_)|(?<=uwsgi_)|(?<=scgi_))(?=param[ \t])|(?<=php_)(?=(?:admin_)?value[ \t])|(?<=_set_)(?=header[ \t])"
                r"|(?<=passenger_env_)(?=var[ \t])"))),
    _Rule("spaced-setting", _CADDY_ENV, _replace_spaced_setting, (("env", r"(?<![\w.$/-]env)(?=[ \t]+[A-Z][A-Z0-9_]*[ \t]+[^\s-])"),), anchored=True),
    _Rule("netrc", _NETRC, _group("netrc-password"), (("machine", "(?=[ \t])"), ("default", r"(?=\s+(?:login|password)[ \t])"))),
    _Rule(
        "redis-conf",
        _REDIS_CONF,
        _replace_conf_password,
        (("requirepass", "(?=[ \t])"), ("masterauth", "(?=[ \t])"), ("pw", r"(?<=bindpw|rootpw)(?=[ \t])")),
    ),
    _Rule("openssl-pass", _OPENSSL_PASS, _group("cli-flag"), ((":", _OPENSSL_PASS_AFTER),)),
    _Rule("htpasswd", _HTPASSWD, _replace_htpasswd, (("-", r"(?<=htpasswd[ \t]-)|(?<=mosquitto_passwd[ \t]-)"),)),
    _Rule("sqlplus", _SQLPLUS, _group("cli-flag"), (("sqlplus", ""),)),
    _Rule(
        "oracle-logon",
        _ORACLE_LOGON,
        _group("url-password"),
        ((":", r"(?<=oracle:thin:)(?=[\"']?[\w$#.]+/)"), ("=", r"(?<![\w.-]userid=)(?<=userid=)(?=[\"']?[\w$#.]+/)")),
        anchored=True,
    ),
    _Rule("net-use", _NET_USE, _group("cli-flag"), (("net use", ""),)),
    # One table, _POSITIONAL_SECRETS; a rule per anchor of its key words.
    *(
        _Rule("positional-secret", re.compile(start + _POSITIONAL_REST), _replace_positional, ((anchor, look),), anchored=True)
        for anchor, start, look in _POSITIONAL_GATES
    ),
    _Rule("auth-command", re.compile("AUTH(?<![\\w-]AUTH)" + _AUTH_ARGS), _replace_auth_command, (("A", r"(?<![\w-]A)(?=UTH[ \t])"),), anchored=True),
    _Rule(
        "auth-command",
        re.compile(r":[0-9]+(?:\[[0-9]+\])?>[ \t]*(?i:auth)" + _AUTH_ARGS),
        _replace_auth_command,
        ((":", r"(?=[0-9]+(?:\[[0-9]+\])?>[ \t]*(?i:auth)[ \t])"),),
        anchored=True,
    ),
    _Rule(
        "sql-password",
        _SQL_PASSWORD,
        _replace_sql_password,
        (
            ("PASSWORD", r"(?=[ \t]+N?')|(?<![\w.]PASSWORD)(?=\(')|(?=[ \t]+FOR[ \t]+[^=\r\n;]{1,100}?=[ \t]*')"),
            ("password", r"(?=[ \t]+N?')|(?<![\w.]password)(?=\(')|(?=[ \t]+for[ \t]+[^=\r\n;]{1,100}?=[ \t]*')"),
            ("IDENTIFIED", r"(?=[ \t])"),
            ("identified", r"(?=[ \t]+(?:with[ \t]+[\w\"'`]+[ \t]+)?by[ \t]+(?:(?:VALUES|PASSWORD)[ \t]+)?[\"'])"),
        ),
    ),
    _Rule(
        "sql-insert",
        _SQL_INSERT,
        _replace_sql_insert,
        (("VALUES", r"(?=\s*\()"), ("values", r"(?=\s*\()"), ("Values", r"(?=\s*\()")),
        anchored=True,
    ),
    _Rule(
        "sql-insert-select",
        _SQL_INSERT_SELECT,
        _replace_sql_insert_select,
        (("SELECT", r"(?<=[\s)]SELECT)(?=[ \t])"), ("select", r"(?<=[\s)]select)(?=[ \t])"), ("Select", r"(?<=[\s)]Select)(?=[ \t])")),
        anchored=True,
    ),
    _Rule("sql-hashed", _SQL_HASHED, _replace_sql_hashed, tuple((word, _SQL_HASHED_LOOK) for word in _SQL_HASHED_WORDS)),
    _Rule("sql-copy", _SQL_COPY, _replace_sql_copy, (("COPY", r"(?=[ \t]+[^\s(;]+[ \t]*\()"),), anchored=True),
    _Rule("sql-secret", _SQL_SECRET, _group("sql-password"), (("S", r"(?<![\w]S)(?<!DROP S)(?<!EATE S)(?<!LTER S)(?=ECRET(?:_ACCESS_KEY)?[ \t]+'|ESSION_TOKEN[ \t]+')"),)),
    _Rule("password-hash", _CRYPT_HASH, _group("password-hash"), (("$", _CRYPT_HASH_GATE),), anchored=True),
    _Rule("kubernetes-secret", _K8S_SECRET, _replace_k8s_secret, (("Secret", r"(?=[\"']?[ \t]*\r?(?:\n|\Z))"),)),
    _Rule(
        "ldif-password",
        _LDIF_PASSWORD,
        _group("ldap-password"),
        # (olcRootPW at the `:` that the assignment gate scans for already: its `W` passes that guard.)
        (("Password", "(?=:)"), ("password", "(?=:)"), (":", r"(?<=olcRootPW:)")),
    ),
    _Rule("imap-login", _IMAP_LOGIN, _replace_mail_login, (("LOGIN", _IMAP_GATE), ("login", _IMAP_GATE))),
    _Rule("pop3-pass", _POP3_PASS, _replace_mail_login, (("S", "(?<=PASS)" + _POP3_GATE), ("pass", _POP3_GATE))),
    _Rule("code-literal", _LITERAL_AFTER_COMMA, _replace_literal_after_comma, ((",", ""),), anchored=True),
    _Rule("code-literal-first", _FIRST_LITERAL, _replace_first_literal, _FIRST_LITERAL_GATES),
    _Rule("code-literal", _OPEN_LONG_LITERAL, _replace_positional_literal, _OPEN_LONG_LITERAL_GATES, anchored=True),
    _Rule("terraform-variable", _TF_VARIABLE, _replace_tf_variable, (("variable", r'(?=[ \t]+"[\w-]+"[ \t]*\{)'),)),
    _Rule("setter", _SETTER, _replace_setter, _SETTER_GATES),
    _Rule("aws-configure", _AWS_CONFIGURE, _group("aws-secret-key"), (("A", r"(?=WS S(?:ecret Access Key|ession Token) \[)"),)),
    _Rule(
        "vault-table",
        _VAULT_TABLE,
        _replace_vault_table,
        # (PowerShell's at the `-` of its `----` line, a character scanned for already: a `Name`
        # anchor cost every text of code a pass.)
        (("Key", r"(?=[ \t]+Value[ \t]*\r?\n---)"), ("-", r"(?<=\n-)(?=---[ \t]+-----)")),
    ),
    # (After the Vault table: its `password   pw` rows are the table's.)
    _Rule("password-directive", _PASSWORD_DIRECTIVE, _replace_password_directive, (("password", _PASSWORD_DIRECTIVE_GATE),)),
    _Rule("device-password", _DEVICE_PASSWORD, _replace_device_password, (("password", _DEVICE_PASSWORD_LOOK), ("secret", _DEVICE_PASSWORD_LOOK)),
          anchored=True),
    _Rule("mbsync", _MBSYNC_BLOCK, _replace_mbsync_block, (("A", r"(?<=IMAPA)(?=ccount[ \t])"), ("S", r"(?<=IMAPS)(?=tore[ \t])"))),
    _Rule("pdftk-pw", _PDFTK_PW, _replace_pw_words, (("pw", r"(?:(?<=user_pw)|(?<=owner_pw)|(?<=input_pw))(?=[ \t]+\S)"),)),
    _Rule("cli-flag", _QPDF_ENCRYPT, _replace_pw_words, (("-", r"(?<=[ \t]-)(?=-encrypt[ \t])"),)),
    _Rule("mkpasswd", _MKPASSWD, _replace_pw_words, (("passwd", r"(?<=mkpasswd)(?=[ \t])"),)),
    _Rule("wpa-passphrase", _WPA_PASSPHRASE, _replace_wpa_passphrase, (("passphrase", r"(?<=wpa_passphrase)(?=[ \t])"),)),
    _Rule("passwordeval", _PASSWORDEVAL, _replace_passwordeval, (("password", r"(?=eval[ \t]+[\"']?(?:echo|printf)[ \t])"),)),
    _Rule("secret-id", _SECRET_ID, _group("assignment"), (("Secret", "(?=I[Dd]| ID[ \t]*[:=])"), ("secret", "(?=Id|_id|-id)"), ("S", "(?=ECRET_ID)"))),
    _Rule(
        "expect-send",
        _EXPECT_SEND,
        _group("expect-password"),
        tuple((word, rf"(?=[^\r\n]{{0,{_EXPECT_REACH}}}\r?\n[ \t]*send[ \t])") for word in ("password", "Password", "passphrase")),
    ),
    _Rule("prose-secret", _PROSE_SECRET, _replace_prose_secret, _PROSE_SECRET_GATES, anchored=True),
    _Rule("login-pair", _LOGIN_PAIR, _replace_login_pair, _LOGIN_PAIR_GATES),
    _Rule("login-pair", _USE_TO_LOG_IN, _replace_use_to_log_in, _USE_TO_LOG_IN_GATES),
    _Rule("slash-label-pair", _SLASH_LABEL_PAIR, _replace_slash_label_pair, ((":", _SLASH_LABEL_LOOK),), anchored=True),
    _Rule("label-then-pair", _LABEL_THEN_PAIR, _replace_label_then_pair, _LABEL_THEN_PAIR_GATES, anchored=True),
    _Rule("prose-command-output", _PROSE_COMMAND_OUTPUT, _replace_prose_command_output, _PROSE_COMMAND_GATES, anchored=True),
    _Rule("bare-command-output", _BARE_COMMAND_OUTPUT, _replace_bare_command_output, _BARE_COMMAND_GATES),
    # (After the printers' rules: "the output of `printenv DB_PASSWORD` is x" is command output.)
    _Rule("named-in-prose", _NAMED_IN_PROSE, _replace_named_in_prose, _NAMED_IN_PROSE_GATES, anchored=True),
    _Rule("yaml-block", _YAML_BLOCK, _replace_yaml_block, ((":", _YAML_BLOCK_LOOK),)),
    _Rule("var-default", _VAR_DEFAULT, _replace_var_default, (("$", _VAR_DEFAULT_GATE),), anchored=True),
    _Rule("fallback-literal", _FALLBACK, _replace_fallback, _FALLBACK_GATES, anchored=True),
    _Rule("bundle-host", _BUNDLE_HOST, _group("assignment"),
          (("_", r"(?<=BUNDLE_)(?=(?:[A-Z0-9-]+__)+[A-Z0-9]+[\"']?[ \t]*[=:][ \t]*\\?[\"']?[^\s:\"'$\\]{1,64}:[^\s\"'\\]{4})"),), anchored=True),
    _Rule("ansible-encrypt-string", _ENCRYPT_STRING, _replace_encrypt_string, (("_", r"(?=string[ \t])"),), anchored=True),
    _Rule("es-password", _ES_PASSWORD, _group("cli-flag"), (("PASSWORD", r"(?<![\w.-]PASSWORD)(?=[ \t]+[\w.-]{1,64}[ \t]+=[ \t]+[^\s\"'\\]{4})"),),
          anchored=True),
    _Rule("redis-acl", _ACL_SETUSER, _replace_acl_setuser,
          (("S", r"(?<![\w]S)(?=ETUSER[ \t])"), ("set", r"(?<=[ \t]set)(?=user[ \t])")), anchored=True),
    _Rule("jenkins-password", _JENKINS_PASSWORD, _group("cli-flag"), (("password", r"(?=[ \t]+to[ \t]+proceed[ \t]+to[ \t]+installation:)"),),
          anchored=True),
    _Rule("build-config-field", _BUILD_CONFIG_FIELD, _replace_build_config_field,
          ((",", r"(?<=[\"'],)(?=[ \t]*[\"'][\w.]{1,80}[\"'][ \t]*,[ \t]*[\"'](?:\\?[\"'])?[^\"'\\\r\n]{4})"),), anchored=True),
    _Rule("foreign-password", _FOREIGN_PASSWORD, _replace_foreign_password, ((":", _FOREIGN_LOOK), ("\uff1a", _FOREIGN_LOOK)), anchored=True),
    _Rule("foreign-prose", _FOREIGN_PROSE, _replace_foreign_value, _FOREIGN_PROSE_GATES, anchored=True),
    _Rule("tool-hit", _TOOL_HIT, _group("cli-flag"), (("[+]", r"(?=[^\r\n]{0,200}?\\{1,2}[\w.$-]{1,64}:[^\s'\"()\\])"),), anchored=True),
    _Rule("change-arrow", _CHANGE_ARROW, _replace_change_arrow, (("-", r"(?<=[ \t]-)(?=>[ \t]*\")"),), anchored=True),
    _Rule("var-dump", _VAR_DUMP, _replace_var_dump, (("=", r"(?<=\]=)(?=>\s{0,40}string\()"),), anchored=True),
    _Rule("table-row", _TABLE_ROW, _replace_table_row,
          (("|", r"(?:(?<=[\w. \t-][ \t]\|)|(?<=[\w.-]\|))(?=[ \t]*[^|\s]{4,300}[ \t]*\|?[ \t]*(?:\r?\n|\Z))"),), anchored=True),
    _Rule("wallet-key", _WALLET_KEY, _replace_wallet_key, (("0x", r"(?<![\w]0x)(?=[0-9a-fA-F]{64}(?![0-9a-fA-F]))"),), anchored=True),
    _Rule("declared-literal", _DECLARED, _replace_declared, _DECLARED_GATES, anchored=True),
    _Rule(
        "echo-to-file",
        _ECHO_TO_FILE,
        _replace_echo_to_file,
        tuple((w, _ECHO_TO_FILE_LOOK.format(word=w)) for w in ("echo", "printf")),
    ),
    _Rule(
        "typed-into-field",
        _TYPED_INTO_FIELD,
        _replace_typed_into_field,
        tuple((w, _TYPED_LOOK) for w in ("password", "Password", "PASSWORD", "passwd", "passcode")),
        anchored=True,
    ),
    _Rule("template-default", _TEMPLATE_DEFAULT, _replace_template_default, (("|", _TEMPLATE_DEFAULT_GATE),), anchored=True),
    _Rule("consul-put", _CONSUL_PUT, _replace_consul_put, (("kv", r"(?<![\w-]kv)(?=[ \t]+put[ \t])"),)),
    _Rule("encoded-credentials", _ENCODED_CREDENTIALS, _group("authorization"), _ENCODED_CREDENTIALS_GATES),
    _Rule("ansible-password-hash", _ANSIBLE_PASSWORD_HASH, _group("assignment"), (("password", r"(?=_hash\()"),)),
    # (At the `@`, one character's scan: `@tcp` and `@unix(` anchors cost every text two substring tests.)
    _Rule("go-mysql-dsn", _GO_MYSQL_DSN, _group("url-password"), (("@", r"(?=tcp6?\(|unix\()"),)),
    _Rule("comparison", _COMPARISON, _replace_comparison, (("=", _COMPARISON_LOOK),), anchored=True),
    _Rule("comparison-yoda", _COMPARISON_YODA, _replace_comparison_yoda, (("=", _COMPARISON_YODA_LOOK),)),
    _Rule("comparison-equals", _EQUALS_CALL, _replace_equals_call, ((".", r"(?=equals(?:IgnoreCase)?\([ \t]*[\"'])"),), anchored=True),
    _Rule("comparison-equals-yoda", _EQUALS_YODA, _replace_equals_yoda, ((".", r"(?<=[\"']\.)(?=equals(?:IgnoreCase)?\([ \t]*[\w$])"),)),
    _Rule("encoder-call", _ENCODER_CALL, _replace_encoder_call, ((".", r"(?<=ncoder\.)(?=(?:matches|encode|upgradeEncoding)\([ \t]*[bB]?[\"'])"),)),
    _Rule("bundle-config", _BUNDLE_CONFIG, _group("cli-flag"), (("b", r"(?<![\w.-]b)(?=undle[ \t]+config[ \t])"),)),
    _Rule("infix-pair", _INFIX_PAIR, _replace_infix_pair,
          tuple((w, _INFIX_PAIR_LOOK) for w in ("password", "Password", "PASSWORD", "passwd", "secret", "Secret", "token", "Token",
                                                "key", "Key", "pass", "Pass", "PASS", "PW")), anchored=True),
    _Rule("ipsec-secret", _IPSEC_SECRET, _replace_ipsec_secret,
          (("S", r"(?<=PS)(?=K[ \t]+[\"'0])"), ("A", r"(?<=EA)(?=P[ \t]+[\"'0])|(?<=XA)(?=UTH[ \t]+[\"'0])"))),
    _Rule("device-key", _DEVICE_KEY, _group("cli-flag"),
          (("key", r"(?:(?<=isakmp key)|(?<=-server key)|(?<=-shared-key))(?=[ \t]+(?:[067][ \t]+)?[^\s\"'])"),)),
    _Rule("ovpn-user-pass", _OVPN_USER_PASS, _group("assignment"), (("</", r"(?<=</)(?=auth-user-pass>|http-proxy-user-pass>)"),)),
    _Rule("composer-tokens", _COMPOSER_TOKENS, _replace_composer_tokens,
          (("-", r"(?:(?<=ithub-)|(?<=itlab-)|(?<=ucket-))(?=(?:oauth|token)\\*\"[ \t]*:[ \t]*\{)"),
           ("b", r"(?<![\w-]b)(?=earer\\*\"[ \t]*:[ \t]*\{)")), anchored=True),
    _Rule("cookie-map", _COOKIE_MAP, _replace_cookie_map,
          tuple((word[1:], rf"(?<={word})(?<![A-Za-z0-9]{word})(?=\\*[\"']?[ \t]*[=:][ \t]*(?:\{{|dict\())")
                for word in ("cookies", "Cookies", "COOKIES"))),
    _Rule("key-list", _KEY_LIST, _replace_key_list,
          (("key", r"(?:(?<![\w.]key)|(?<=app\.key))(?=s[ \t]*[=:][ \t]*\[)"), ("secret", r"(?<![\w.]secret)(?=[ \t]*:[ \t]*\[)"),
           ("cookieParser(", r"(?=[ \t]*\[)"))),
    _Rule("domain-target", _DOMAIN_TARGET, _replace_domain_target, (("@", r"(?<=[^\s@/'\"`\\]@)(?=[\w\[])"),)),
    _Rule("impacket-target", _IMPACKET_TARGET, _replace_impacket_target,
          ((".", rf"(?=py[ \t])(?:{_IMPACKET_DOT_LOOK})"),
           ("-", r"(?<=impacket-)(?<![\w.-]impacket-)(?=[\w-]+[ \t])"))),
    _Rule("ssm-put", _SSM_PUT, _replace_ssm_put, (("put-parameter", ""), ("secret", r"(?<=keyvault secret)(?=[ \t]+set[ \t])"))),
    _Rule("rclone", _RCLONE, _replace_rclone, (("rclone", r"(?<![\w.-]rclone)(?=(?:\.exe)?[ \t])"),)),
    # (Last: it reads what every rule before it marked.)
    _Rule("quoted-rest", _QUOTED_REST, _replace_quoted_rest, (("]", _QUOTED_REST_LOOK),)),
    # (After every rule that leaves an assignment marker, quoted-rest too: with the gates, a rule
    # whose gate only a marker opens runs after all the others, so in the middle of the list it
    # ran before some markers when every rule ran and after them when the gates chose; the two
    # differed in what they redacted.)
    _Rule("assignment-tail", _ASSIGNMENT_TAIL, _replace_assignment_tail, (("]", r"(?<=\[REDACTED:assignment\])(?!\[REDACTED:)[^\s\\\"\w$:.!?]"),), anchored=True),
)


def _sep_guard(sep: str, others: str) -> str:
    """A one-character test that every `=`/`:` gate implies: the character before `sep` ends a
    secret word (`_after`'s quick test, any case), is a gap character (a quote, a space, a
    backslash, a `]`), or is one of `others`."""
    ends = {w[-1] for w in (*_SECRET_WORDS, *_FOREIGN_SECRET_WORDS, "authorization", "cookie")}
    chars = "".join(sorted(ends | {c.upper() for c in ends} | set(others))) + "\\\\\"' \\t\\]?|"
    return f"(?<=[{chars}]{re.escape(sep)})"


# Cheap tests right after each anchor, so that the many anchors in ordinary text (`-rw-r--r--`,
# `file.txt`, `12:30`, `x = 1`, `snake_case`) fail once instead of once per look. Per anchor,
# branches tried in order: (guard, kinds), where the guard holds wherever a rule of one of
# `kinds` can match (None: every other rule at that anchor), and only those rules' looks run
# after it. tests/test_redact_prefilter.py checks that no rule's match is lost.
_ANCHOR_GUARDS: dict[str, tuple[tuple[str, Optional[frozenset[str]]], ...]] = {
    # Every `_` gate sits on the last `_` of a token prefix (`ghp_`, `sk_live_`), and every such
    # token has at least 10 letters and digits after it; snake_case code mostly does not.
    "_": (
        # (Ansible's `ansible-vault encrypt_string PW`.)
        (r"(?<=encrypt_)", frozenset({"ansible-encrypt-string"})),
        # (nginx's `fastcgi_param`, PHP's `php_value`: a spaced setting.)
        (r"(?<=[iptv]_)(?=[pavh])", frozenset({"spaced-setting"})),
        # ... except these, whose bodies may start with `_`, `-`, `+` or `/`.
        (
            "(?<=[c21dtTsu]_)(?:(?<=glc_)|(?<=fm2_)|(?<=fo1_)|(?<=figd_)|(?<=_pat_)|(?<=CCIPAT_)|(?<=ntrys_)|(?<=ntryu_))",
            frozenset({"grafana-cloud-token", "fly-token", "figma-token", "dockerhub-token", "circleci-token", "sentry-token"}),
        ),
        # ... and the `_` between an upper-case secret word (TOKEN SECRET PASSWORD PASSWD PASS KEY)
        # and its variant (`API_KEY_2=`, `DB_PASSWORD_PROD=`), and the `_` in an upper-case name
        # that prose quotes a command's output after (`printenv API_KEY prints x`), and the one
        # before a name's secret word that a fallback follows (`JWT_SECRET = x || "lit"`): an
        # upper-case name, then a separator or a word. (One branch for all: snake_case fails it at once.)
        (
            r"(?<=[0-9A-Z]_)(?=[0-9A-Z_]{1,40}[`\"']?[ \t]*[=:,a-zI\u2192\"\[\]-])",
            frozenset({"suffixed-assignment", "prose-command-output", "fallback-literal", "declared-literal", "named-in-prose", "bundle-host"}),
        ),
        (r"(?=[A-Za-z0-9]{10})", None),
    ),
    # `-`: `--password`, `-----BEGIN` have another `-` next; the rest end a token prefix (sk-
    # GOCSPX- pypi- glpat- glrt- gldt- xox[abposr]- xapp-) and have 10 or more token characters
    # after it.
    # New prefixes end in U K T x l y Y s e too (xoxe- as well) (HRKU- PMAK- CFPAT- pplx- pul- tskey- key- access-);
    # `--user`, ` -p` and `"-p"` are flags (cli-short-flag, argv-flag); `<32 hex>-us9` is a Mailchimp key.
    "-": (
        ("(?=-)", frozenset({"private-key", "cli-flag", "vault-table"})),
        (r"(?<=[ \t\"']-)", frozenset({"cli-short-flag", "argv-flag", "htpasswd", "prose-command-output", "change-arrow"})),
        (r"(?=us[0-9])", frozenset({"mailchimp-key"})),
        (r"(?<=impacket-)", frozenset({"impacket-target"})),
        (r"(?<=<-)", frozenset({"r-assignment"})),  # R's `api_key <- "v"`
        # poetry's `http-basic.` and `pypi-token.`, nmcli's `wifi-sec.` and `wireless-security.`,
        # composer's `github-oauth.` and `gitlab-token.`
        (r"(?<=[ipsb]-)(?=[bsto])", frozenset({"positional-secret", "composer-tokens"})),
        (r"(?<=[kXitabposrUKTxlyYsecd]-)(?=[A-Za-z0-9_%-]{10})", None),
    ),
    # `.`: the `.` before a JWT's `eyJ` payload; the rest end ya29. SG. hooks. discord. discordapp.
    # Also hvs. hvb. hvr. sl. dt0c01. (s b r l 1), sk.eyJ (Mapbox), a Discord bot token's first
    # dot, Terraform's .atlasv1. and Airtable's 64 hex after the dot.
    ".": (
        ("(?=eyJ)", frozenset({"jwt", "mapbox-token"})),
        (r"(?=[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27})", frozenset({"discord-bot-token"})),
        (r"(?=atlasv1\.|[a-f0-9]{64})", frozenset({"terraform-token", "airtable-token"})),
        (r"(?=py[ \t])", frozenset({"impacket-target"})),  # Impacket's `GetUserSPNs.py`
        (r"(?=[meu])(?<=coder\.)", frozenset({"encoder-call"})),  # `encoder.matches(`
        (r"(?=equals)", frozenset({"comparison-equals", "comparison-equals-yoda"})),  # `password.equals("x")`
        (r"(?<=[9Gsdpbrl1]\.)", None),
    ),
    # `b`: the API clients' (`Github(`, `WebClient(`), Bundler's `bundle config` and Composer's
    # `"bearer": {` behind one character's test; then bearer, basic, `bw unlock`.
    "b": ((r"(?=[(Ceu])", frozenset({"code-literal-first", "bundle-config", "composer-tokens"})), ("", None)),
    # `=`: assignments and Authorization (a secret word's last letter or a gap character),
    # AccountKey= / SharedAccessKey= (y), sig= (g).
    # (`x == "lit"`, `x != "lit"`: a comparison, at the first `=`, after a character that can end a
    # secret's name; its own branch, so that `!=` opens no other look.)
    # (`"lit" == x`: its own branch too, a quote before the operator.)
    "=": (
        (_comparison_guard(), frozenset({"comparison"})),
        (_COMPARISON_YODA_GUARD, frozenset({"comparison-yoda"})),
        (_sep_guard("=", "yg"), None),
    ),
    # `:`: `://` of a URL with a password; the rest as for `=`.
    # Also `<digits>:AA` (Telegram), `:APA91b` (Firebase), `pass:` (openssl), `port:` (.pgpass):
    # one guard for all of these, so that a plain colon fails two branches, not five.
    ":": (
        (
            r"(?:(?=//|A[AP]|[0-9]+(?:\[[0-9]+\])?>)|(?<=[0-9*]:)|(?<=pass:)|(?<=/p:))",
            frozenset({"url-password", "url-token-user", "telegram-bot-token", "firebase-key", "openssl-pass", "pgpass", "pgpass-word", "auth-command",
                       "prose-command-output"}),
        ),
        # (A label in another language: `Passwort:`, `senha:`, `пароль:`, `密码:`; non-ASCII or one of
        # their last letters before the colon.)
        (r"(?:(?<=[^\x00-\x7f]:)|(?<=[^\x00-\x7f] :)|(?<=[rtadloesuiRTADLOESUI]:)|(?<=[rtadloesuiRTADLOESUI] :))", frozenset({"foreign-password"})),
        # ("user/pass: admin/x": a label's last letter, `s`, `d` or `w`, before the colon.)
        (r"(?<=[sSdDwW]:)", frozenset({"slash-label-pair"})),
        (_sep_guard(":", ""), None),
    ),
    # `,`: ("NAME", "value") pairs and auth=("user", "pw"): a quote before the comma.
    # Also a literal after a comma: an argument that code-literal reads (`login(user, "pw")`).
    ",": ((r"(?=[ \t]*(?:[bB]|\[\]byte\(|Buffer\.from\([ \t]*)?[\"'])", frozenset({"code-literal"})), (r"(?<=[\"'],)", None)),
}


@dataclass(frozen=True)
class _Gate:
    anchor: str
    # The anchor, then per guard branch the guard and its rules' looks as groups g0, g1, ...
    pattern: "re.Pattern[str]"
    # rules[j]: the index in _RULES of the rule whose look is group g{j}.
    rules: tuple[int, ...]
    # looks[j]: group g{j}'s look alone, tried right after the anchor.
    looks: tuple["re.Pattern[str]", ...]
    # guards[j]: the anchor and the guard that group g{j} sits behind.
    guards: tuple["re.Pattern[str]", ...]
    # later[j]: the looks after g{j} as one alternation (groups g{j+1}, ...), tried right after
    # the anchor; "" after the last. Where g{j} held, the next look that holds too is one call
    # in C away, not one Python call per look (the `-` gate has 33). Compiled when first
    # needed (`_compiled`): compiling them all would add a third to the import time.
    later: tuple[str, ...]
    # The anchor's rarest character: for an anchor of several characters, one character's test
    # (memchr) rules most texts out before the slower substring test runs.
    key: str
    # For an anchor of several characters that shares a lower-case word with others (`pass`
    # for `password`, `PASSWORD`, `passwd`, `requirepass`, ...): that word. One test of it in
    # the lower-cased text rules the whole family out, where each member's own test costs as
    # much; "" where the anchor has no such family.
    family: str


# Lower-case letters from most to least frequent in English and code; every other character
# counts as rarer than all of them.
_LETTER_FREQUENCY = "etaoinsrhldcumfpgwybvkxjqz"


def _rarest(anchor: str) -> str:
    return max(anchor, key=lambda c: _LETTER_FREQUENCY.find(c) if c in _LETTER_FREQUENCY else len(_LETTER_FREQUENCY))


def _families(anchors: list[str]) -> dict[str, str]:
    """Each anchor of several characters whose lower-cased form holds the lower-cased form of
    another (or is one of several case spellings): the shortest such word of 3 or more
    characters. Since every anchor is ASCII, an anchor in a text is in `text.lower()` lower-cased."""
    words = {a.lower() for a in anchors if len(a) >= 3}
    family = {}
    for anchor in anchors:
        holds = [w for w in words if w in anchor.lower()]
        if holds:
            family[anchor] = min(holds, key=len)
    counts: dict[str, int] = {}
    for word in family.values():
        counts[word] = counts.get(word, 0) + 1
    return {a: w for a, w in family.items() if counts[w] > 1}


def _build_gates(rules: tuple[_Rule, ...]) -> tuple[_Gate, ...]:
    """One regex per anchor character over all rules' gates at that anchor, and for each, which
    rule each of its groups belongs to.

    Each regex starts with its anchor as a literal, so the engine scans for that one character
    with a tight loop; a single regex over all anchors would need a character-set scan, which
    measured slower than these few literal scans together. The groups come after the anchor,
    never around it, so that the literal stays first. Each look sits in a look-ahead, so a gate
    match is its anchor alone and the scan goes on at the very next character: no anchor is
    ever skipped because an earlier look read past it.
    """
    by_anchor: dict[str, list[tuple[str, int]]] = {}
    for i, rule in enumerate(rules):
        for anchor, look in rule.gates:
            by_anchor.setdefault(anchor, []).append((look, i))
    gates = []
    families = _families([a for a in by_anchor if len(a) > 1])
    for anchor, looks in by_anchor.items():
        branches = _ANCHOR_GUARDS.get(anchor, (("", None),))
        members: list[list[tuple[str, int]]] = [[] for _ in branches]
        for look, i in looks:
            kind = rules[i].kind
            branch = next(b for b, (_, kinds) in enumerate(branches) if kinds is None or kind in kinds)
            members[branch].append((look, i))
        alternatives, placed = [], []
        for (guard, _), admitted in zip(branches, members):
            if admitted:
                groups = []
                for look, i in admitted:
                    groups.append(f"(?P<g{len(placed)}>(?={look}))")
                    placed.append((look, i, guard))
                alternatives.append(guard + "(?:" + "|".join(groups) + ")")
        gates.append(
            _Gate(
                anchor,
                re.compile(re.escape(anchor) + "(?:" + "|".join(alternatives) + ")"),
                tuple(i for _, i, _ in placed),
                tuple(re.compile(look) for look, _, _ in placed),
                tuple(re.compile(re.escape(anchor) + guard) for _, _, guard in placed),
                _later_looks([look for look, _, _ in placed]),
                _rarest(anchor),
                families.get(anchor, ""),
            )
        )
    return tuple(gates)


def _later_looks(looks: list[str]) -> tuple[str, ...]:
    """For each look, the looks after it as one alternation whose group names are their
    indices (see `_Gate.later`)."""
    return tuple("|".join(f"(?P<g{j}>(?={looks[j]}))" for j in range(i + 1, len(looks))) for i in range(len(looks)))


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str) -> "re.Pattern[str]":
    return re.compile(pattern)


_GATES = _build_gates(_RULES)


def _gate_starts(text: str) -> dict[int, list[int]]:
    """For each rule whose gate matched in `text` (its index in _RULES), the offsets of the
    anchors where it did.

    An alternation reports only the first of its groups that holds, but two rules' looks can
    hold at the same anchor (`SharedAccessKey=` is both an azure-key and an assignment
    gate, and a value too short for one may be a secret for the other): the looks after the one
    reported are tried on their own there, so every rule that can match is found.
    """
    starts: dict[int, list[int]] = {}
    lowered = ""
    family_in: dict[str, bool] = {}
    for gate in _GATES:
        if gate.key not in text:
            continue  # the gate starts with its anchor: a test in C saves the regex pass
        if gate.family:
            if gate.family not in family_in:
                lowered = lowered or text.lower()
                family_in[gate.family] = gate.family in lowered
            if not family_in[gate.family]:
                continue
        if len(gate.anchor) > 1 and gate.anchor not in text:
            continue
        rules, later = gate.rules, gate.later
        after = len(gate.anchor)
        for m in gate.pattern.finditer(text):
            pos = m.start()
            j = int(m.lastgroup[1:])
            while True:
                starts.setdefault(rules[j], []).append(pos)
                rest = later[j]
                held = _compiled(rest).match(text, pos + after) if rest else None
                if held is None:
                    break
                j = int(held.lastgroup[1:])
    return starts


def _apply(rule: _Rule, text: str, starts: Optional[list[int]] = None) -> tuple[str, int]:
    """Replace `rule`'s matches in `text`: everywhere, or only matches beginning at `starts`."""
    parts: list[str] = []
    copied = scanned = 0

    def everywhere() -> Iterator["re.Match[str]"]:
        pos = 0
        while (m := rule.pattern.search(text, pos)) is not None:
            yield m
            pos = max(scanned, m.start() + 1)  # read on from `scanned` as the loop below left it

    def at_starts() -> Iterator[Optional["re.Match[str]"]]:
        for pos in starts:
            if pos >= scanned:  # read as `scanned` stands when the loop below asks for more
                yield rule.pattern.match(text, pos)

    for m in everywhere() if starts is None else at_starts():
        if m is None or m.start() < scanned:
            continue
        # A match the replacer turns down still covers its span on both paths, so
        # `key=key=key=...` is read once, not once per `=` ...
        scanned = m.end()
        out = rule.replace(text, m)
        if out is not None:
            parts.append(text[copied : m.start()])
            parts.append(out)
            copied = m.end()
        elif (inner := _quoted_value_start(m)) is not None:
            # ... but for a quoted value: what it holds is read again, a secret of the same rule
            # in it too (`CONN_TOKEN="Server=db;User=your_user;Password=Xy7Kp9q"`, turned down
            # for `your`, hid the password). A quoted value ends at its quote, so the text read
            # twice is no more than the quotes' spans: still linear.
            scanned = inner
    if not parts:
        return text, 0
    parts.append(text[copied:])
    return "".join(parts), len(parts) // 2


_QUOTED_GROUPS = ("dq", "sq", "bq", "eq")


def _quoted_value_start(m: "re.Match[str]") -> Optional[int]:
    """Where a match's quoted value starts, if it has one (the assignment rules' groups)."""
    groups = m.re.groupindex
    for name in _QUOTED_GROUPS:
        if name in groups and m.start(name) >= 0:
            return m.start(name)
    return None


# How far from a marker a gate it opened can reach: the longest anchor and look, with room.
_REOPEN_REACH = 64


def _redact(text: str, precheck: bool = True) -> tuple[str, int]:
    """Run the rules in order; with `precheck`, only those whose gate matched.

    Order matters: specific token rules run before the generic assignment rule, so
    `OPENAI_API_KEY=sk-...` gets the more telling [openai-key]; the assignment rule then sees a
    marker and leaves it.
    """
    if not precheck:
        total = 0
        for rule in _RULES:
            text, n = _apply(rule, text)
            total += n
        return text, total
    if len(text) < MIN_SECRET_CHARS:
        return text, 0
    starts = _gate_starts(text)
    total = 0
    try:
        for i in sorted(starts):
            rule = _RULES[i]
            # Gate offsets hold until a replacement shifts the text; after that, search it all.
            at = sorted(starts[i]) if rule.anchored and not total else None
            text, n = _apply(rule, text, at)
            total += n
        if total:
            # A marker can open a gate its secret kept shut: `<token>ENV API_TOKEN x` has no `ENV`
            # at a word start until the token before it is `[REDACTED:...]`. The gates are read
            # again around each marker; a rule whose gate only now matches runs over the whole text.
            opened: set[int] = set()
            for m in MARKER_PATTERN.finditer(text):
                opened.update(_gate_starts(text[max(0, m.start() - _REOPEN_REACH) : m.end() + _REOPEN_REACH]))
            for i in sorted(opened - set(starts)):
                text, n = _apply(_RULES[i], text)
                total += n
    finally:
        _SCAN.last = None  # (it holds a text)
    return text, total


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


class RedactionError(Exception):
    """Redaction failed. It says in which function and with what exception type, never with
    what text: its message is logged, and a payload must not reach a log line."""


def _guarded(fn: Callable[[Any], tuple[Any, int]], value: Any) -> tuple[Any, int]:
    # A bug here must neither let text through unredacted (the caller gets an exception, not
    # the value) nor put text in a message: builtin exceptions can quote their input
    # (UnicodeDecodeError, KeyError), so the original is dropped (`from None`), type name kept.
    try:
        return fn(value)
    except RecursionError:
        raise RedactionError(f"{fn.__name__}: value nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any failure, reported without its message
        raise RedactionError(f"{fn.__name__} failed with {type(exc).__name__}") from None


# A JSON document longer than this is redacted as text only (parsing it costs time and memory).
_MAX_JSON_VIEW = 2_000_000


def _redact_string(text: str) -> tuple[str, int]:
    """`_redact_string_once`, skipped for a short string already seen to hold nothing.

    Only the whole pass's verdict may fill the cache: a JSON document whose text pass finds
    nothing can still have a secret in an escaped string, and cached after the text pass alone,
    the same tool output a second time (the hook payload, then the transcript) came back in clear.
    """
    short = len(text) <= _CLEAN_MAX_LEN
    if short and text in _CLEAN:
        return text, 0
    red, n = _redact_string_once(text)
    if short and not n:
        if len(_CLEAN) >= _CLEAN_MAX:
            _CLEAN.clear()
        _CLEAN.add(text)
    return red, n


def _redact_string_once(text: str) -> tuple[str, int]:
    """`_redact`, and for a JSON document, its strings redacted too, each as the text it stands for.
    A file numbered line by line (the Read tool's result, `cat -n`) is read without its numbers,
    and search results (grep -rn) without their file names and numbers too (`_redact_prefixed`).

    Inside a JSON string a command's quotes are `\\"` and its lines end in `\\n`
    (`{"stdout": "echo \\"pw\\" | sudo -S ...\\nENV API_TOKEN x"}`, an MCP tool's result holding
    JSON text): rules that read quotes, line starts or flags see them askew. Without escapes too:
    the quote that opens a JSON string reads as a string literal's (`{"out": "SECRET_KEY =
    'x'"}`), or ends an assignment's name (`"API_KEY   =   x"`). So such a document is parsed
    and each of its strings redacted as the text it stands for (keys too, and strings that are
    JSON documents in turn); if that finds secrets the text pass missed, the document is written
    back out (same content, JSON's own spacing), else the text pass stands.
    """
    red, n = _redact_text_and_json(text)
    # Escaped, percent-encoded, look-alike or invisible characters: read as decoded too. (After
    # the JSON view: a document's strings are read there one level of escaping at a time, and
    # what that finds keeps the document whole.)
    red, decoded = _redact_views(red)
    return red, n + decoded


def _redact_text_and_json(text: str) -> tuple[str, int]:
    red, n = _text_passes(text)
    if len(text) > _MAX_JSON_VIEW:
        return red, n
    body = text.strip()
    if not (body[:1] in "{[" and body[-1:] in "}]"):
        return red, n
    try:
        # The view reads the document the text pass left, so what it finds comes on top of what
        # the text pass found (read from `text`, a secret the view cannot see alone, such as a
        # name and its value in two strings, came back in clear).
        out, more = _redact_value(json.loads(red.strip()))
    except ValueError:  # (not JSON after all, or a replacement broke it; its message is not kept)
        try:
            out, total = _redact_value(json.loads(body))  # every string, as the text it stands for
        except ValueError:
            return red, n
        more = total - n
    if more <= 0:
        return red, n  # the text pass found as much (and keeps the text's own layout)
    indent = 2 if "\n " in body else None
    dumped = json.dumps(out, ensure_ascii=False, indent=indent)
    return red[: len(red) - len(red.lstrip())] + dumped + red[len(red.rstrip()) :], n + more


def _text_passes(text: str) -> tuple[str, int]:
    """The passes over a text as text: the rules (a numbered file without its numbers), a pasted
    terminal session's printed secrets, each run between tags, search results without their prefixes."""
    red, n = _redact_prefixed(text, _LINE_NUMBERS) if _LINE_NUMBERS.match(text) else _redact(text)
    # A terminal session pasted or run in `!` mode: what `pass show x` printed (secret_output.py).
    red, printed = redact_pasted_sessions(red)
    n += printed
    if "</" in red or "/>" in red or ("<" in red and _HTML_OPENING_TAG.search(red)):
        red, between = _redact_between_tags(red)
        n += between
    if _SEARCH_HITS.match(red):
        # Search results: read again without their prefixes, over what the text pass left (a
        # `.pgpass` row or a time has the same shape, and the text pass found what it holds).
        red, more = _redact_prefixed(red, _SEARCH_HITS)
        n += more
    return red, n
# ---------------------------------------------------------------------------------------------
# Views: the text as a reader would decode it
# ---------------------------------------------------------------------------------------------
# The rules read text as typed. A secret can reach a trace in a spelling they do not read, and
# a model trained on that spelling learns the secret all the same:
#   - escaped more than once: a JSON string holding JSON holding JSON (`{\\\"password\\\":
#     \\\"x\\\"}`); one level of `\"` is read by the rules themselves, any number of `\\n` too;
#   - percent-encoded: a query string's or form body's `password%3Dx%26user%3Dbob`,
#     `%22password%22%3A%22x%22`, twice encoded (`%253D`); and HTML entities (`&quot;`, `&#61;`);
#   - in look-alike characters: `DB_PASSWORD＝x` (full width), `﹕`, `꞉`, `ｇｈｐ＿...`, `𝐩𝐚𝐬𝐬𝐰𝐨𝐫𝐝` (Unicode's
#     compatibility forms of ASCII, NFKC);
#   - with invisible characters inside (a zero-width space in `ghp_...`, a soft hyphen, a BOM).
# Where a text holds any of these (one cheap test each), it is decoded into a view that
# remembers, for each piece it changed, where that piece came from; the text passes run over the
# view; and each secret they find there is replaced in the text itself, over the whole span its
# characters came from (`%3DXy7%21` goes whole, the `%26user%3Dbob` after it stays).

# Characters that show nothing: zero-width space, joiners, marks of direction, word joiner,
# invisible operators, soft hyphen, BOM, Mongolian vowel separator, variation selectors, tags.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
)
# Outside the BMP, whole blocks: the tags (invisible), and the enclosed and mathematical letters
# (most fold). (A character class over single characters beyond U+FFFF is tested range by range
# in Python's regex engine: a class of all the folds cost 0.3 s per 300 KB of non-ASCII text; a
# BMP class is one table lookup.)
_INVISIBLE_ASTRAL = "\U000e0000-\U000e007f"
_FOLDS_ASTRAL = "\U0001d400-\U0001d7ff\U0001f100-\U0001f1ff"
# Look-alikes of `:` and `=` that NFKC leaves as they are.
_LOOK_ALIKES = {"\ua789": ":", "\u2236": ":", "\u02f8": ":", "\u0589": ":", "\u05c3": ":", "\ua78a": "=", "\u1400": "=", "\u30a0": "="}
# Smart quotes: folded in a view, but no reason to make one (prose is full of them).
_QUOTE_FOLDS = {c: '"' for c in "\u201c\u201d\u201e\u201f\u2033\u2036\u301d\u301e"} | {c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u2035"}


def _compatibility_folds() -> dict[str, str]:
    """Each character in the blocks that hold ASCII's compatibility forms (full width, small and
    vertical forms, super- and subscripts, letter-like, enclosed and mathematical letters) whose
    NFKC form is printable ASCII: `＝` is `=`, `ｇ` is `g`, `𝐩` is `p`. (Spaces are left out: a
    no-break space is everywhere and hides no secret.)"""
    blocks = ((0x2070, 0x2150), (0x2460, 0x2500), (0x3000, 0x3400), (0xFE10, 0xFE70), (0xFF01, 0xFF5F),
              (0x1D400, 0x1D800), (0x1F100, 0x1F200))
    folds = {}
    for lo, hi in blocks:
        for cp in range(lo, hi):
            c = chr(cp)
            folded = unicodedata.normalize("NFKC", c)
            if folded != c and folded.isascii() and folded.isprintable() and folded.strip() == folded:
                folds[c] = folded
    return folds | _LOOK_ALIKES


_FOLDS = _compatibility_folds()
_ALL_FOLDS = _FOLDS | _QUOTE_FOLDS
_BMP_FOLDS = "".join(re.escape(c) for c in _ALL_FOLDS if ord(c) < 0x10000)
# What makes a view worth reading (`_view_triggers`: a text that is all ASCII skips the Unicode test).
# (A printable ASCII character percent-encoded, `pass%77ord`, `ghp%5F...`, and a character's UTF-8
# bytes, `%E2%80%8B` (a zero-width space), `%EF%BC%9D` (`＝`). In lower case only `%3d`, `%3a`,
# `%2c`: `%2d`, `%5f` and the like are printf's conversions, in every other line of C and Python;
# or any other between two letters or digits, inside a word, as an encoded name's `_` or `-` is
# (`api%5fkey`, `DB%5fPASS`, `x-api%2dkey`): printf's stand after a space, a quote or another
# conversion, and where one does not, a view is read for nothing.)
_PERCENT_VIEW = re.compile(r"%(?:(?:25)*(?:[2-7][0-9A-F]|3[ad]|2c|[C-Fc-f][0-9A-Fa-f]%[89ABab])|(?<=[A-Za-z0-9]%)(?:25)*[2-7][a-f](?=[A-Za-z0-9]))")
# (A quote escaped twice or more, an odd run of 3 or more backslashes before it (`\\\\'`, an even
# run, is a string of backslashes); one level, `\"`, the rules read. An escaped quote, `-`, `_`,
# `:`, `=`, invisible or full-width character: `\u0022`, `\x3d`, `\u200b`. A backslash first, and
# only where a run starts: the engine scans for the literal, and a long run is read once.)
_ESCAPE_VIEW = re.compile(
    r"\\(?<!\\\\)(?:(?:\\\\)++[\"']|\\*+(?:x(?:2[27dD]|3[aAdD]|5[fF])"
    r"|u(?:00(?:2[27dD]|3[aAdD]|5[fF]|[aA][dD])|20(?:0[0-9a-fA-F]|2[fF]|5[fF]|6[0-4])|30(?:00|a0)|[fF][eE](?:[fF][fF]|[1-6][0-9a-fA-F])|[fF][fF][0-5][0-9a-fA-F])))"
)
_DEEP_ESCAPES = re.compile(r"\\(?<!\\\\)(?:\\\\)++[\"']")
# (Any numeric entity; the named ones of a quote, `:`, `=`, `_` or an invisible character.)
_ENTITY_VIEW = re.compile(r"&(?:amp;)*(?:quot|apos|equals|colon|lowbar|shy|zwn?j|ZeroWidthSpace|NoBreak|#[0-9]{2,7}|#[xX][0-9a-fA-F]{2,6});")
# Spaces other than ASCII's (no-break, typographic, ideographic): a space in a view.
_SPACES = "\u00a0\u2000-\u200a\u202f\u205f\u3000"
_SPACE_CHAR = re.compile(f"[{_SPACES}]")
# Combining marks on an ASCII character (`gh\u0301p_...`): dropped in a view. (Only on ASCII:
# scripts that are written with them keep them.)
_COMBINING = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
# Letters of Cyrillic and Greek that look Latin (`раssword` with a Cyrillic р and а, `DB_PΑSSWΟRD`
# with a Greek Α and Ο, `ghр_...`). Russian and Greek text is full of them, so they are read as
# Latin only in a word that mixes them with ASCII letters and holds no other letter of their
# script (`пароль`, `Python-скрипт`, `test_пример` stay as they are): no word of either language
# is written so, a spoofed name or token is.
_SCRIPT_LOOK_ALIKES = {
    # Cyrillic
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c", "\u0443": "y", "\u0445": "x",
    "\u0455": "s", "\u0456": "i", "\u0458": "j", "\u0501": "d", "\u04bb": "h", "\u051b": "q", "\u051d": "w",
    "\u04cf": "l", "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M", "\u041d": "H",
    "\u041e": "O", "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0425": "X", "\u0405": "S", "\u0406": "I",
    "\u0408": "J", "\u04ae": "Y", "\u051a": "Q", "\u051c": "W",
    # Greek
    "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03bd": "v", "\u03b9": "i", "\u03ba": "k", "\u03c5": "u",
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I", "\u039a": "K",
    "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X",
}
_SCRIPT_FOLD = str.maketrans(_SCRIPT_LOOK_ALIKES)
_LOOK_ALIKE_CLASS = "".join(_SCRIPT_LOOK_ALIKES)
# (The test for a view: such a letter beside an ASCII one, or beside `_` or a digit, `АРІ_KEY`.
# The look-alike first: the engine scans for the rare character, not for every ASCII letter.)
_MIXED_SCRIPT_VIEW = re.compile(f"[{_LOOK_ALIKE_CLASS}](?:(?<=[A-Za-z0-9_].)|(?=[A-Za-z0-9_]))")
# (The piece a view folds: the whole word, of ASCII letters, digits, `_` and look-alikes only, with
# at least one ASCII letter and one look-alike.)
_MIXED_SCRIPT_WORD = (
    rf"(?<!\w)(?=[A-Za-z0-9_]*[{_LOOK_ALIKE_CLASS}])(?=[0-9_{_LOOK_ALIKE_CLASS}]*[A-Za-z])"
    rf"[A-Za-z0-9_{_LOOK_ALIKE_CLASS}]+(?!\w)"
)
_UNICODE_VIEW = re.compile(
    f"[{_INVISIBLE}{_SPACES}{''.join(re.escape(c) for c in _FOLDS if ord(c) < 0x10000)}]"
    f"|[{_INVISIBLE_ASTRAL}{_FOLDS_ASTRAL}]|(?<=[!-~])[{_COMBINING}]"
)
# The pieces a view decodes: a run of invisibles, or of combining marks on an ASCII character (to
# nothing), a run of backslashes and what it escapes (one level: `\\\"` is `\"`, `\\u003d` is
# `\u003d`, `\u003d` is `=`), a %XX of printable ASCII or a line break or a character's UTF-8
# bytes, an entity, a look-alike or a space.
_VIEW_PIECE_REST = (
    r"(?P<bs>\\+)(?:u(?P<u>[0-9a-fA-F]{4})|x(?P<x>[0-9a-fA-F]{2})|(?P<esc>[\"'/])|(?=[^\\])|\Z)"
    r"|%(?:(?P<pct>[2-7][0-9a-fA-F]|0[9aAdD])"
    r"|(?P<utf8>[CDcd][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|[Ee][0-9A-Fa-f](?:%[89ABab][0-9A-Fa-f]){2}|[Ff][0-4](?:%[89ABab][0-9A-Fa-f]){3}))"
    r"|&(?P<ent>quot|apos|equals|colon|amp|lowbar|shy|zwn?j|ZeroWidthSpace|NoBreak|nbsp|lrm|rlm|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});"
    f"|(?P<fold>[{_BMP_FOLDS}{_SPACES}]|[{_FOLDS_ASTRAL}])"
)
_VIEW_PIECE = re.compile(f"(?P<inv>(?:[{_INVISIBLE}]|[{_INVISIBLE_ASTRAL}])+|(?<=[!-~])[{_COMBINING}]+)|{_VIEW_PIECE_REST}")
# (A mixed-script word is looked for only in a text that is not all ASCII: in the others, the
# escaped and percent-encoded ones that most views are, its look at every word's start would be
# paid for nothing.)
_VIEW_PIECE_MIXED = re.compile(
    f"(?P<inv>(?:[{_INVISIBLE}]|[{_INVISIBLE_ASTRAL}])+|(?<=[!-~])[{_COMBINING}]+)|(?P<mixed>{_MIXED_SCRIPT_WORD})|{_VIEW_PIECE_REST}"
)
_ENTITIES = {"quot": '"', "apos": "'", "equals": "=", "colon": ":", "amp": "&", "lowbar": "_", "shy": "\u00ad", "zwj": "\u200d",
             "zwnj": "\u200c", "ZeroWidthSpace": "\u200b", "NoBreak": "\u2060", "nbsp": "\u00a0", "lrm": "\u200e", "rlm": "\u200f"}
_INVISIBLE_CHAR = re.compile(f"[{_INVISIBLE}]|[{_INVISIBLE_ASTRAL}]")
# Decoded again while a round leaves something to decode (`%253D` is `%3D`, then `=`; each round
# takes one level of escaping off, so a quote escaped 8 times over, 255 backslashes, is read).
_VIEW_ROUNDS = 8


def _view_triggers(text: str) -> list["re.Pattern[str]"]:
    """The tests above that can hold in `text`: each needs a character (`%`, `\\`, `&`, non-ASCII)
    that one substring test rules out."""
    found = []
    if "%" in text:
        found.append(_PERCENT_VIEW)
    if "\\" in text:
        found.append(_ESCAPE_VIEW)
    if "&" in text:
        found.append(_ENTITY_VIEW)
    if not text.isascii():
        found.append(_UNICODE_VIEW)
        found.append(_MIXED_SCRIPT_VIEW)
    return found


def _needs_view(text: str) -> bool:
    return any(trigger.search(text) for trigger in _view_triggers(text))


# A view is read around what made it worth reading, not over the whole text: up to this far each
# way, from a line break (or a space) so that no line is read from its middle. A 60 KB tool output
# with one `%3d` in it costs a few lines' reading, not the whole output's again.
_VIEW_REACH = 1024


def _view_windows(text: str) -> list[tuple[int, int]]:
    """The stretches of `text` around the characters that make a view worth reading, merged."""
    triggers = _view_triggers(text)
    upcoming = [t.search(text) for t in triggers]  # each test's next hit, searched again once passed
    windows: list[tuple[int, int]] = []
    pos = 0
    while True:
        for i, trigger in enumerate(triggers):
            if upcoming[i] is not None and upcoming[i].start() < pos:
                upcoming[i] = trigger.search(text, pos)
        hits = [m.start() for m in upcoming if m is not None]
        if not hits:
            return windows
        at = min(hits)
        start, end = _line_edge(text, at, -1), _line_edge(text, at, 1)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
        pos = end


def _line_edge(text: str, at: int, way: int) -> int:
    """Where a window around `at` ends in direction `way`: the text's end within `_VIEW_REACH`,
    else the line break farthest from `at` within it, else the farthest space, else the first
    space past the reach (a word is not cut in two; one longer than `_MAX_RUN` is)."""
    if way < 0:
        if at <= _VIEW_REACH:
            return 0
        lo = at - _VIEW_REACH
        cut = text.find("\n", lo, at)
        if cut < 0:
            cut = text.find(" ", lo, at)
        if cut < 0:
            cut = max(text.rfind(" ", max(0, lo - _MAX_RUN), lo), max(0, lo - _MAX_RUN) - 1)
        return cut + 1
    if len(text) - at <= _VIEW_REACH:
        return len(text)
    hi = at + _VIEW_REACH
    cut = text.rfind("\n", at, hi)
    if cut < 0:
        cut = text.rfind(" ", at, hi)
    if cut < 0:
        cut = text.find(" ", hi, hi + _MAX_RUN)
    return cut if cut >= 0 else min(len(text), hi + _MAX_RUN)


def _worth_decoding(code: int) -> Optional[str]:
    """The character an escape or entity spells, where a view reads it decoded: printable ASCII, a
    look-alike, a space or an invisible character (which a later round folds or drops)."""
    c = chr(code) if code <= 0x10FFFF else ""
    if c and ((" " <= c <= "~") or c in _ALL_FOLDS or _INVISIBLE_CHAR.match(c) or _SPACE_CHAR.match(c)):
        return c
    return None


def _decoded_piece(m: "re.Match[str]") -> str:
    kind = m.lastgroup
    if kind == "inv":
        return ""
    if kind == "mixed":
        return m.group(0).translate(_SCRIPT_FOLD)
    if m.start("bs") >= 0:
        # One level of escaping off: `\\` is `\`, and an odd run's last backslash escapes what
        # follows (`\"` is `"`, `\u003d` and `\x3d` are `=`; `\n` stays `\n`, which the rules read as a break).
        run = len(m.group("bs"))
        if run % 2 == 0:
            return "\\" * (run // 2) + m.group(0)[run:]
        code = m.group("u") or m.group("x")
        if code is not None:
            return "\\" * (run // 2) + (_worth_decoding(int(code, 16)) or m.group(0)[run - 1 :])
        if m.group("esc") is not None:
            return "\\" * (run // 2) + m.group("esc")
        return "\\" * (run // 2 + 1)
    if kind == "pct":
        return chr(int(m.group("pct"), 16))
    if kind == "utf8":
        try:
            return _worth_decoding(ord(bytes.fromhex(m.group("utf8").replace("%", "")).decode("utf-8"))) or m.group(0)
        except (ValueError, TypeError):  # (not UTF-8, or more than one character)
            return m.group(0)
    if kind == "ent":
        entity = m.group("ent")
        if entity[0] != "#":
            return _ENTITIES[entity]
        code = int(entity[2:], 16) if entity[1] in "xX" else int(entity[1:])
        return _worth_decoding(code) or m.group(0)
    if _SPACE_CHAR.match(m.group(0)):
        return " "
    return _ALL_FOLDS.get(m.group(0), m.group(0))  # (an astral block's character that does not fold)


class _View:
    """`text` decoded one round, and where each changed piece came from: `pieces[i]` is
    (start in the view, end in the view, start in `text`, end in `text`)."""

    def __init__(self, text: str) -> None:
        out: list[str] = []
        self.pieces: list[tuple[int, int, int, int]] = []
        copied = at = 0
        for m in (_VIEW_PIECE if text.isascii() else _VIEW_PIECE_MIXED).finditer(text):
            decoded = _decoded_piece(m)
            if decoded == m.group(0):
                continue
            out.append(text[copied : m.start()])
            at += m.start() - copied
            out.append(decoded)
            self.pieces.append((at, at + len(decoded), m.start(), m.end()))
            at += len(decoded)
            copied = m.end()
        out.append(text[copied:])
        self.text = "".join(out)
        self._view_starts = [p[0] for p in self.pieces]

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """Where view[start:end] (not empty) came from: every piece it touches, whole."""
        return self._source(start, False), self._source(end - 1, True)

    def _source(self, pos: int, after: bool) -> int:
        i = bisect.bisect_right(self._view_starts, pos) - 1
        if i < 0:
            return pos + after
        v0, v1, s0, s1 = self.pieces[i]
        if pos < v1:  # inside a decoded piece: all of it
            return s1 if after else s0
        return s1 + (pos - v1) + after


def _found_spans(view: str, red: str) -> Optional[list[tuple[int, int, str]]]:
    """The spans of `view` that `red` (`view` redacted) replaced, with each marker: (start, end,
    marker). A span is known only up to where its neighbours could begin: `red` keeps the text
    between markers, and where that text also occurs inside a secret, the span is taken as wide
    as any reading allows (the earliest end of the text before it, the latest start of the text
    after), never narrower. None if `red` is not `view` with spans replaced by markers."""
    markers = list(MARKER_PATTERN.finditer(red))
    if not markers:
        return None
    kept = [red[a:b] for a, b in zip([0] + [m.end() for m in markers], [m.start() for m in markers] + [len(red)])]
    if not view.startswith(kept[0]) or not view.endswith(kept[-1]):
        return None
    # Earliest ends of each kept run, left to right (each marker stands for one character or more).
    earliest_end = [len(kept[0])]
    for run in kept[1:-1]:
        at = view.find(run, earliest_end[-1] + 1)
        if at < 0:
            return None
        earliest_end.append(at + len(run))
    last_start = len(view) - len(kept[-1])
    # Latest starts of each kept run, right to left.
    latest_start = [last_start]
    for run in reversed(kept[1:-1]):
        at = view.rfind(run, 0, latest_start[-1] - 1)
        if at < 0:
            return None
        latest_start.append(at)
    latest_start.reverse()
    if last_start < earliest_end[-1] + 1 or latest_start[0] < len(kept[0]) + 1:
        return None
    return [(earliest_end[i], latest_start[i], m.group(0)) for i, m in enumerate(markers)]


def _redact_views(text: str) -> tuple[str, int]:
    """`text` with what the text passes find in its views (see above) replaced in it too.

    Escapes come off one level a round, down to one level (`\\\\\\\"` to `\\\"` to `\"`): there a
    JSON string's own quotes still differ from the ones it holds, which the rules read. Where
    the text held deeper escapes, a view with that last level off too is read after (a JSON
    string's `-p\"PW\"` is read as `-p"PW"` only there).
    """
    windows = _view_windows(text) if _view_triggers(text) else []
    if not windows:
        return text, 0
    out, copied, n = [], 0, 0
    for start, end in windows:
        window = text[start:end]
        red, found = _redact_view(window, deeper=False)
        if _DEEP_ESCAPES.search(window):
            red, more = _redact_view(red, deeper=True)
            found += more
        if found:
            out.append(text[copied:start])
            out.append(red)
            copied, n = end, n + found
    if not n:
        return text, 0
    out.append(text[copied:])
    return "".join(out), n


def _redact_view(text: str, deeper: bool) -> tuple[str, int]:
    views = [_View(text)]
    while len(views) < _VIEW_ROUNDS and views[-1].pieces and _needs_view(views[-1].text):
        views.append(_View(views[-1].text))
    if deeper:
        views.append(_View(views[-1].text))
        if not views[-1].pieces:
            return text, 0
    view = views[-1].text
    red, n = _text_passes(view)
    if not n:
        return text, 0
    spans = _found_spans(view, red)
    if spans is None:
        # Not to be placed back (no rule is known to do this): the decoded text, redacted, is safe.
        return (red, n) if MARKER_PATTERN.search(red) else (text, 0)
    for layer in reversed(views):
        spans = [(*layer.source_span(start, end), mark) for start, end, mark in spans]
    out, copied, found = [], 0, 0
    for start, end, mark in spans:
        if start < copied:  # (spans widened into each other: one marker for both)
            start = copied
            if start >= end:
                continue
        if text[start:end] != mark:
            found += 1
        out.append(text[copied:start])
        out.append(mark)
        copied = end
    out.append(text[copied:])
    return ("".join(out), found) if found else (text, 0)


# Markup that touches its text: Claude Code stores a `!` turn as
# `<bash-stdout>FOO=1\nDB_PASS=x</bash-stdout>` and a slash command's output as
# `<local-command-stdout>...</local-command-stdout>`; HTML as `<td>password=x</td>`. Read whole,
# the tag is part of the value's line: `x</bash-stdout>` reads as code (`<` after a value is a
# generic's, `Foo<Bar>`), and `<bash-stdout>curl -u u:pw` puts no line start before `curl`.
# A closing tag is markup, never code (no generic is written `</T>`), so its name marks the tags
# that bound text; an opening tag with no closing one (`Option<String>`, `Vec<u8>`) is left in
# its text.
_CLOSING_TAG = re.compile(r"</([A-Za-z][\w:.-]*)\s*>")
# An empty tag is markup too (`<br/>`, JSX's `<Foo token={x} />`: no generic ends in `/>`), and
# so are HTML's void elements, which never close (`DB_PASS=x<br>`), in a text with other markup.
_EMPTY_TAG = re.compile(r"<([A-Za-z][\w:.-]*)(?:\s[^<>]*)?/>")
_VOID_ELEMENTS = ("br", "BR", "hr", "HR", "img", "IMG", "input", "meta", "link", "wbr")
# ... and an HTML element's opening tag with no closing one (`DB_PASSWORD=x<br>`, `API_KEY=x<span>`):
# an element's name is never a generic's (`Vec<u8>`, `Option<String>` stay in their text). Read whole,
# `x<br>` looked like a generic, and the value stayed.
_HTML_OPENING_TAG = re.compile(rf"<({_HTML_ELEMENTS})(?:\s[^<>]*)?>")


@functools.lru_cache(maxsize=256)  # a few sets of tag names recur: Claude Code's, a table's
def _tags_named(names: tuple[str, ...]) -> "re.Pattern[str]":
    """The opening, closing and empty tags of `names`, captured, so that `split` keeps them.
    Longest name first: `<bash-stdout>` is not read as `<b` and the rest."""
    alternatives = "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
    return re.compile(rf"(</?(?:{alternatives})(?:\s[^<>]*)?/?>)")


def _redact_between_tags(text: str) -> tuple[str, int]:
    """Each run of text between tags redacted as a text of its own, the tags kept as they are.

    Runs after the whole-text pass, over what it left: rules that read across tags (a `!` turn's
    command and output, `<password>x</password>`) have had their turn, and this pass only adds
    what the tags hid. A text with no closing or empty tag pays two substring tests (the caller's), and a scan for an HTML element's opening tag if it holds a `<`.
    A run is redacted as a whole text is (`_redact_string`: its lines may be numbered, be search
    hits or a JSON document); it holds none of the tags it was cut at, so that goes no deeper.
    """
    names = set(_CLOSING_TAG.findall(text)) | set(_EMPTY_TAG.findall(text)) | set(_HTML_OPENING_TAG.findall(text))
    if not names:
        return text, 0
    names.update(_VOID_ELEMENTS)
    pieces = _tags_named(tuple(sorted(names))).split(text)  # text, tag, text, ..., text
    last, n = len(pieces) - 1, 0
    for i in range(0, len(pieces), 2):
        segment = pieces[i]
        # Runs too short to hold a secret: a table's cells, the newline between two tags.
        if len(segment) < MIN_SECRET_CHARS or segment.isspace():
            continue
        if _between_line_breaks(segment, i == 0, i == last):
            continue  # `<system-reminder>\n...\n</system-reminder>`: the whole pass read it as is
        pieces[i], found = _redact_string(segment)
        n += found
    return ("".join(pieces), n) if n else (text, 0)


def _between_line_breaks(segment: str, first: bool, last: bool) -> bool:
    """Whether no tag touches `segment`: each end is the text's or a line break. Then the
    whole-text pass saw its lines start and end where they do alone, and reading it again
    would find nothing more (and cost as much again)."""
    return (first or segment[0] in "\r\n") and (last or segment[-1] in "\r\n")


# Claude Code's Read tool numbers each line of a file (`     1→text` in 2.0, `1\ttext` in 2.1), as
# `cat -n` does: the number is no part of the line's text.
_LINE_NUMBERS = re.compile(r"(?m)^ *[0-9]+(?:→|\t)")
# grep -rn, ripgrep and the Grep tool put the file, the line number or both before each hit
# (`./app.sh:12:mysql -pPW`, `12:...`, `/src/settings.py:SECRET_KEY = ...`). A file without a
# number must hold a `/`, so that `arn:aws:...` and `key: value` are not read as one. (Up to its
# first `/`: tried from every `/` of a long word without a colon, the rest was read to the end
# from each, `1//0=1//0=...` in seconds.)
_SEARCH_HITS = re.compile(r"(?m)^(?:(?:[^\s:]+:)?[0-9]+:|[^\s:/]*/[^\s:]*:)")


def _redact_prefixed(text: str, prefix: "re.Pattern[str]") -> tuple[str, int]:
    """`_redact` over `text`'s lines without what `prefix` puts before them, then that put back.

    The rules read line starts (a `.pgpass` row, a CSV header, `login` on the line after
    `machine`), the name before `=` (`app.sh:3:SECRET_KEY=` is no colon path), the program
    before a flag (`3→mysql -pPW`) and the lines of a key block, which a line number or a file
    name in front of each line hides. A line without one (a note after the file) is read as it is.
    """
    red, n = _redact(prefix.sub("", text))
    if not n:
        return text, 0
    lines = text.split("\n")
    prefixes = [m.group(0) if m else "" for m in map(prefix.match, lines)]
    bare = [line[len(p) :] for line, p in zip(lines, prefixes)]
    out = red.split("\n")
    if len(out) == len(bare):
        return "\n".join(p + line for p, line in zip(prefixes, out)), n
    # A secret of several lines (a key block) became one marker: the lines around it keep their
    # prefixes, and the marker takes the prefix of the first line it stands for.
    rebuilt = []
    for _, i1, i2, j1, j2 in difflib.SequenceMatcher(None, bare, out, autojunk=False).get_opcodes():
        rebuilt.extend((prefixes[i1 + k] if i1 + k < i2 else "") + out[j1 + k] for k in range(j2 - j1))
    return "\n".join(rebuilt), n


def redact_text_with_count(text: str) -> tuple[str, int]:
    """`text` with every secret replaced by ``[REDACTED:kind]``, and how many were replaced."""
    return _guarded(_redact_string, text)


def redact_text(text: str) -> str:
    """`text` with every secret replaced by ``[REDACTED:kind]``; the rest is unchanged."""
    return _guarded(_redact_string, text)[0]


def _named_value_is_secret(kind: Optional[str], value: str) -> bool:
    """{"api_key": "abc"}: the name is enough, whatever the value looks like; but an UPPER_CASE
    `_KEY` name alone is not ({"CACHE_KEY": "user"} is a setting), and `auth` holds a secret only
    as base64 `user:password`."""
    if kind is None or _is_placeholder(value):
        return False
    if kind == _WEAK:
        return _looks_made(value)
    if kind == _BASIC:
        return _decodes_to_credentials(value)
    return True


# Short strings seen to hold no secret: hook payloads repeat their keys ("tool_response",
# "transcript_path") and many values (the cwd, tool names, modes) endlessly. A string with a
# secret in it is never kept here, so no secret lives on in this cache.
_CLEAN: set[str] = set()
_CLEAN_MAX_LEN, _CLEAN_MAX = 256, 8192


def _redact_key(key: str) -> tuple[str, int]:
    """A dict key with any secret in it replaced: `{"ghp_...": 1}` must not keep the token."""
    if len(key) < MIN_SECRET_CHARS:
        return key, 0
    return _redact_string(key)


def _named_mark(name: str, value: str) -> Optional[str]:
    """What replaces `value` when `name` names it (a dict key, or the name of a name/value pair),
    or None when the name says nothing: {"api_key": "abc"} loses the value whatever it looks like;
    {"Authorization": "Basic dXNl..."} keeps its scheme; {"Cookie": "sid=..."} its cookie names.
    No rule over the value alone can see these: the name that makes it a secret is elsewhere."""
    if _named_value_is_secret(_name_kind(name) or (_CHOSEN if name == "pass" else None), value):
        return _ASSIGNMENT_MARK
    lowered = name.lower()
    if lowered.endswith("authorization") and not _is_placeholder(value):
        scheme = _AUTH_SCHEME.match(value)
        return (scheme.group(0) if scheme else "") + _AUTHORIZATION_MARK
    if lowered.endswith("cookie"):
        return _mark_cookies(value)
    return None


# A name/value pair as an object of its own: Kubernetes and ECS environment entries
# ({"name": "DB_PASSWORD", "value": "x"}), HAR headers ({"name": "Cookie", "value": "sid=x"}),
# tags ({"Key": "api_token", "Value": "x"}). HAR's `cookies` lists hold nothing but cookies, so
# there every value goes, whatever the cookie is named.
_PAIR_NAMES = ("name", "Name", "key", "Key")
_AZURE_KEY_MARK = marker("azure-key")
_PAIR_VALUES = ("value", "Value")


_SECRET_TYPES = frozenset({"CONCEALED", "SecureString", "secret", "SECRET", "password", "PASSWORD"})


def _marked_secret(pair: dict) -> bool:
    """Whether a record's own fields say its value is secret (see _pair_mark)."""
    if pair.get("sensitive") is True:
        return True
    kind = pair.get("type", pair.get("Type"))
    return isinstance(kind, str) and kind in _SECRET_TYPES or pair.get("purpose") == "PASSWORD"


def _pair_mark(pair: dict, in_cookies: bool) -> Optional[tuple[str, str]]:
    """(the value's key, what replaces it) when `pair` is a name/value pair whose value is a
    secret; None otherwise."""
    # (Plain lookups, the value's key first: this runs for every dict of every payload, and
    # most have no `value`.)
    value_key = "value" if "value" in pair else "Value" if "Value" in pair else None
    if value_key is None:
        # kaggle.json's {"username": "bob", "key": "<32 hex>"}: a user's API key (as _USER_BESIDE reads it in text).
        key = pair.get("key")
        if isinstance(key, str) and ("username" in pair or "user" in pair) and _plausible_secret(_MADE, key):
            return "key", _ASSIGNMENT_MARK
        return None
    if not isinstance(value := pair[value_key], str):
        return None
    if "keyName" in pair or "KeyName" in pair:
        # `az storage account keys list` and its kin: [{"keyName": "key1", "value": "<the key>"}]
        return None if len(value) < 16 or _is_placeholder(value) else (value_key, _AZURE_KEY_MARK)
    if _marked_secret(pair):
        # A record that says its value is secret, whatever it is named: `terraform output -json`'s
        # {"sensitive": true, "type": "string", "value": "pw"}, 1Password's CLI's {"type":
        # "CONCEALED", "label": "api key", "value": "k"}, SSM's {"Type": "SecureString", "Value": "pw"}.
        return None if _is_placeholder(value) else (value_key, _ASSIGNMENT_MARK)
    for name in map(pair.get, _PAIR_NAMES):
        if isinstance(name, str):
            break
    else:
        return None
    if in_cookies:
        return None if _is_placeholder(value) else (value_key, _COOKIE_MARK)
    mark = _named_mark(name, value)
    return None if mark is None else (value_key, mark)


_TOKENS_BY_HOST = frozenset({"github-oauth", "gitlab-token", "gitlab-oauth", "bitbucket-oauth", "bearer"})


def _redact_value(value: Any, in_cookies: bool = False) -> tuple[Any, int]:
    """`value` redacted, and how many secrets went; `in_cookies`: an item of a `cookies` list."""
    if isinstance(value, str):
        return _redact_string(value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        total = 0
        pair = _pair_mark(value, in_cookies) if len(value) >= 2 else None
        # A Kubernetes Secret as JSON (`kubectl get secret x -o json`): as for its YAML (_K8S_SECRET).
        k8s_secret = value.get("kind") == "Secret"
        for key, item in value.items():
            if isinstance(key, str):
                new_key, n = _redact_key(key)
                total += n
                if new_key in out:
                    # Two keys became one marker ({"ghp_a": 1, "ghp_b": 2}): number the later ones,
                    # so that no value is lost.
                    stem, k = new_key, 2
                    while f"{stem}#{k}" in out:
                        k += 1
                    new_key = f"{stem}#{k}"
            else:
                new_key = key
            # (Strings and scalars are handled here rather than by a call per item: hook
            # payloads are many small dicts.)
            if isinstance(item, str):
                mark = pair[1] if pair is not None and key == pair[0] else _named_mark(key, item) if isinstance(key, str) else None
                if mark is not None:
                    out[new_key] = mark
                    total += 1
                else:
                    out[new_key], n = _redact_string(item)
                    total += n
            elif isinstance(key, str) and key in _TOKENS_BY_HOST and isinstance(item, dict):
                # Composer's auth.json: {"github-oauth": {"github.com": "<token>"}}, a token per host.
                # (Under `bearer` too, only machine-made values: an OpenAPI scheme's {"bearer": {"type": "http"}} is no token.)
                marked = {k for k, v in item.items() if isinstance(v, str) and _plausible_secret(_MADE, v)}
                out[new_key] = {k: _ASSIGNMENT_MARK if k in marked else v for k, v in item.items()}
                total += len(marked)
            elif k8s_secret and key in ("data", "stringData") and isinstance(item, dict):
                out[new_key], n = _k8s_secret_values(item)
                total += n
            elif isinstance(item, (dict, list, tuple)):
                cookies = isinstance(key, str) and key.lower().endswith("cookies") and isinstance(item, (list, tuple))
                out[new_key], n = _redact_value(item, cookies)
                total += n
            else:
                out[new_key] = item
        return out, total
    if isinstance(value, (list, tuple)):
        items = []
        total = 0
        for item in value:
            red, n = _redact_value(item, in_cookies and isinstance(item, dict))
            items.append(red)
            total += n
        return (items if isinstance(value, list) else tuple(items)), total
    return value, 0


def _k8s_secret_values(data: dict) -> tuple[dict, int]:
    """A Kubernetes Secret's `data` or `stringData`: every string value goes, the keys stay
    (redacted like any key)."""
    out: dict[Any, Any] = {}
    total = 0
    for key, item in data.items():
        new_key, n = _redact_key(key) if isinstance(key, str) else (key, 0)
        total += n
        if isinstance(item, str) and not _is_placeholder(item):
            out[new_key] = _K8S_MARK
            total += 1
        else:
            out[new_key], n = _redact_value(item)
            total += n
    return out, total


def redact_value_with_count(value: Any) -> tuple[Any, int]:
    """`redact_value`, and how many secrets it replaced."""
    return _guarded(_redact_value, value)


def redact_value(value: Any) -> Any:
    """A copy of `value` (str, dict, list, tuple, anything else) with every string redacted.

    Dict keys are redacted like any string (a key that is a token becomes its marker, numbered
    ``#2``, ``#3`` if two collapse into one); keys without secrets are kept. A non-empty string under a key that names a secret (``api_key``,
    ``password``, ``clientSecret``) is replaced whole, even if it does not look like a token.
    Values of other types are returned as they are.
    """
    return redact_value_with_count(value)[0]
