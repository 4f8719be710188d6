// Package bash is the decoder and aggregator stage of the bash measurement: it turns the command lines that
// interactive bash shells read (records of a uretprobe on readline) into DataKit logging points, with secrets
// redacted, and finds the bash binaries to attach that uretprobe to.
//
// # What is captured
//
// Every line readline returns in an interactive bash: what the user typed at the prompt (and continuation
// lines), whether it runs or not. Scripts, bash -c and non-interactive shells do not call readline and are not
// seen; neither are other shells (dash, zsh, busybox sh). The kernel captures at most LineLen-1 bytes of a line;
// a longer line is reported cut, with truncated=true. Empty and blank lines (Enter alone) are not reported;
// Stats.Empty counts them.
//
// # Points
//
// One point per line, measurement "bash", no tags of its own (global tags are added by the encoder). Its time
// is when readline returned (the record's CLOCK_MONOTONIC time, converted to wall-clock time by MonoToWall or
// Config.Wall). Fields, strings unless said:
//
//	cmd        the line, redacted
//	pid        the bash process id (its tgid), in decimal
//	user       the login name of the process's real uid (see below)
//	message    "<time RFC3339> pid:`<pid>` user:`<user>` cmd:`<cmd>`", DataKit's format, with the line's time
//	truncated  bool: the kernel capture cut the line (false on every other point)
//	redacted   the names of the rules that hid something, comma-separated; absent when none did
//
// Unlike DataKit, user is the login name (DataKit puts the GECOS display name there), the time is when the
// line was entered (not when the collector processed it), and cmd is not limited to 128 bytes.
//
// A Buffer holds at most Config.MaxLines lines (DefaultMaxLines) between flushes and counts the rest in
// Stats.Dropped. Flush returns the points in time order.
//
// # Redaction
//
// Before a line leaves the collector, each rule's matches are replaced by "***". A rule is a name and a Go
// regexp (RE2 syntax); it hides the regexp's capture group named "secret" (the first such group that took part
// in the match), else its group 1, else the whole match, so the context stays readable (mysql -p***,
// password=***). All rules look at the original line, defaults first in the order below, then the user's;
// overlapping secrets are merged into one "***". The default rules, whose names the redacted field shows:
//
//	password       KEY=value where KEY ends in password, passwd, pass, passphrase or pwd (maybe then a number),
//	               any case (password=, PGPASSWORD=, MYSQL_PWD=, a query string's pass=), and JSON
//	               "...password": "value"; not PWD, OLDPWD, *ASKPASS (a program), *BYPASS, and not a switch
//	               (true, false, yes, no, on, off: MYSQL_ALLOW_EMPTY_PASSWORD=yes)
//	password-flag  --password value, --password=value, --db-password ..., openssl's -pass/-passin/-passout
//	               (a --password followed by another flag, -x..., prompts and is left alone)
//	mysql-p        -pSECRET attached to -p on a mysql*, mariadb* command line (-p alone prompts: left alone)
//	authorization  Authorization: <scheme> <credentials> and Authorization:<credentials> headers; a known
//	               scheme (Basic, Bearer, Digest, ...) stays visible, the rest of the header is hidden
//	bearer         Bearer <token> anywhere
//	aws-secret     AWS_SECRET_ACCESS_KEY=value, aws_secret_access_key value, aws_session_token value
//	token-env      KEY=value where KEY ends in token, secret, _key, apikey, accesskey, secretkey (and other
//	               <kind>key), credentials, creds or _auth (maybe then a number), or is SECRET_KEY_BASE
//	               (GITHUB_TOKEN=, STRIPE_KEY=, CLIENT_SECRET=, BASIC_AUTH=, access_token= in a URL), the same
//	               keys in JSON, and signed URLs' sig=, signature=, X-Amz-Signature=, X-Amz-Security-Token=;
//	               not a switch, not KEY= alone, not a *_KEY that names something else (SORT_, PRIMARY_,
//	               PUBLIC_, SSH_, GPG_, PARTITION_KEY, ...), not GOOGLE_APPLICATION_CREDENTIALS (a path);
//	               SSH_AUTH_SOCK= and PASSWORD_FILE= do not end so and stay
//	token-flag     --token value, --token=value, --client-secret ..., --api-key ..., --access-key, --secret-key,
//	               --account-key, --auth-key/--authkey, --oauth2-bearer (not docker's --secret id=...,src=...)
//	secret-header  X-Api-Key:, Api-Key:, X-Auth-Token:, X-Access-Token:, X-Vault-Token:, Private-Token:,
//	               Cookie: and Set-Cookie: header values
//	url-password   the password of a URL's user information (https://user:***@host, redis://:***@host), and
//	               the user itself when it looks like a token: 20 or more letters, digits, '-' and '_' whose
//	               character classes change often (https://***@github.com; not git@, not https://alice@)
//	curl-user      the password of curl -u/--user user:password and -U/--proxy-user user:password
//	cli-password   passwords that commands take in their own ways, counted only on that command's line:
//	               sshpass -p (among sshpass's options: ssh -p after it is a port), docker, podman, nerdctl,
//	               helm, skopeo, buildah, oras, crane, regctl, oc, cf and az login -p/-pSECRET, redis-cli -a
//	               (its -p is the port), mongosh/mongo/mongodump.../cqlsh/cypher-shell -p, twine, smbmap,
//	               racadm, rdesktop, useradd, usermod -p, sqlcmd/bcp/osql/ipmitool/mosquitto_pub -P,
//	               ldapsearch... -w, ldappasswd -a/-s, zip/unzip -P, 7z -pX, rar -pX, openssl -k/-K and
//	               openssl passwd X, keytool -storepass/-keypass, ssh-keygen -N/-P (not ''), snmp* -A/-X/-c,
//	               xfreerdp /p:, smbclient... -U user%***, lftp -u user,***, etcdctl --user user:***, httpie
//	               -a user:***, sqlplus user/***@db, gh secret set --body, kubectl create secret
//	               --from-literal=k=***, nmcli ... password, wpa_passphrase ssid ***, htpasswd -b's last word,
//	               vault login TOKEN (the last word, not k=v), mc alias set name url key ***, rabbitmqctl
//	               add_user name ***, SQL's IDENTIFIED BY '***', WITH PASSWORD '***', SET PASSWORD = '***',
//	               redis requirepass/masterauth, and what is echoed into chpasswd (user:***), passwd or sudo -S
//	known-token    tokens whose format gives them away, anywhere: GitHub (ghp_, gho_, ghu_, ghs_, ghr_,
//	               github_pat_), GitLab (glpat-, gldt-, ...), Slack (xoxb-, xoxp-, ..., xapp-), Stripe secret
//	               and restricted keys (sk_live_, sk_test_, rk_live_, whsec_; pk_ keys are public and stay), AWS
//	               key ids (AKIA, ASIA + 16), Google API keys (AIza + 35), sk-... keys of mixed case and digits
//	               (OpenAI, Anthropic), npm_, pypi-, hf_, Vault (hvs., s.), Tailscale (tskey-), DigitalOcean,
//	               SendGrid, age secret keys, JWTs (eyJ....eyJ....), and the secret path of Slack and
//	               Discord webhook URLs
//	private-key    the body of a -----BEGIN ... PRIVATE KEY----- block (up to its END line, or the end of the
//	               word or quotes when the line has none), and a line that is only 40 or more base64
//	               characters of mixed case and digits (a key's body pasted into a heredoc)
//
// Regexps do not see the meaning of a command line, so a rule may hide a word that is not a secret in a line
// that only looks like it holds one, and leave a secret that is written in a way no rule knows; the rules
// aim to hide what is typed into common tools, and to leave ordinary commands (ssh -p 2222, docker run -p,
// mkdir -p, sort --key=2, grep -r token .) as they are.
//
// The default rules find where a secret starts and follow shell quoting to find where it ends. Outside quotes
// a secret is the rest of its shell word, quoted parts included (export PGPASSWORD='x y' becomes
// export PGPASSWORD=***). Inside a quoted argument a token or flag value ends at a blank or the closing quote
// (curl -H "Authorization: Bearer ***"), a header's value and the password of user:password or user%password
// at the closing quote, an assignment's value at the closing quote, ';' or '&' (docker run -e "PASSWORD=a b" hides "a b"; psql "password=x dbname=y" hides
// "x dbname=y" too), a JSON string value at its own closing quote: when in doubt more is hidden, never less.
// Tokens of a known format, URL passwords and sqlplus passwords are exactly what their format allows. A line
// cut by the capture hides whatever part of a secret it holds. User rules hide exactly their group.
//
// Users add rules in ebpf.conf; NewRedactor appends them after the defaults. A user rule cannot replace or
// disable a default rule: its name must be new. A rule without a name, with an empty pattern or with a
// pattern that does not compile is an error naming the rule (and the regexp error).
//
// # User names
//
// Users looks the uid up in the passwd file of the process's own root directory
// (/proc/<pid>/root/etc/passwd, a container's own users; symbolic links resolve inside that root), then in
// the host's /etc/passwd, and else reports the uid as a number. Files are parsed once and again only when they
// change. The uid is the process's real uid in the initial user namespace: in a container with its own user
// namespace it is the mapped (host) uid, which the container's passwd does not list, so the host's name or
// the number comes out. Users from NSS services (LDAP, sssd) are reported as numbers.
//
// # Bash binaries
//
// The uretprobe attaches to a file (an inode), so every distinct bash file needs its own. Finder hands out
// each (device, inode) once, with the file offset of its readline:
//   - Host: /bin/bash and /usr/bin/bash of the collector's root, at start;
//   - Scan (periodically): the executable of every process that is a bash (named bash, or with comm "bash"),
//     and /bin/bash and /usr/bin/bash under every distinct process root directory (containers, chroots), so a
//     container's bash is probed before anyone runs it (kubectl exec);
//   - Check(pid): the same for one process, at once, when the kernel reports that it exec'd bash.
//
// A bash without a readline of its own (Alpine's, linked to libreadline.so) cannot be probed this way; it is
// reported once and not parsed again.
//
// # Limits
//
// A uretprobe only sees calls that entered the function after it was attached, so the line a shell is
// reading while its probe is being attached is missed. The first line typed in a shell whose bash binary was
// never seen before may be missed this way: the exec report, Check and the attach take some milliseconds, and
// if bash reached its prompt first, that line is lost. When the collector starts, the line each already
// open shell is at is missed too. Later lines are captured.
package bash
