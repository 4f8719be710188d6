package bash

import (
	"dkebpf/options"

	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Mask replaces each hidden secret.
const Mask = "***"

// Rule is a redaction rule: Pattern is a Go regexp (RE2 syntax); the part of a match it hides is the capture
// group named "secret" (the first one that took part in the match), else group 1, else the whole match.
type Rule = options.RedactRule

// extent says how secretEnd finds where a default rule's secret ends (its regexp finds where it starts).
type extent uint8

const (
	exact  extent = iota // the regexp's group is the secret (user rules, url-password, known-token)
	word                 // a shell word: a flag's argument, a token
	assign               // the value of KEY=value: inside quotes it runs to the closing quote, '&' or ';'
	header               // an HTTP header value, user:password: inside quotes it runs to the closing quote
	quoted               // (secretEnd) a JSON string value inside quotes
)

// pattern is one regexp of a default rule.
type pattern struct {
	re  string
	ext extent
	// hints: the regexp can only match a line that holds one of these, in lower case (after ASCII case
	// folding, see foldCase), so other lines skip it; nil: every line runs it.
	hints []string
	// ctx, if set: a match counts only where it starts inside the text of this regexp's group 1: the words
	// of the command the flag belongs to (the match starts with the blank before the flag).
	ctx string
	// check, if set: a match counts only where check says so, given the group "name" (if any) and the
	// secret's bounds.
	check func(line, name string, s, e int) bool
}

type defaultRule struct {
	name string
	pats []pattern
}

// Pieces of the default patterns. The default rules' regexps only find where a secret starts; where it ends
// is for secretEnd to say, from the shell's quoting.
const (
	// the first byte of a value (after KEY=, --flag=): secretEnd may find it empty (password= x)
	valueStart = `(?P<secret>.)`
	// the first byte of a word after a flag and blanks: a word starting with '-' is taken for another flag
	argStart = `(?P<secret>[^\s-])`
	// the first byte of a token, a header value
	wordStart = `(?P<secret>\S)`
	// the first byte of a flag's value, which may be attached to the flag (-pSECRET)
	valStart = `(?P<secret>[^\s;&|])`
	// a JSON string value ({"password": "x"})
	jsonVal = `(?P<secret>")`
	// what may come before a command name: start of line, a separator, a path, an opening quote
	cmdStart = "(?:^|[\\s;&|(/'\"`])"
	// one shell word, quoted parts taken whole (a lone quote counts as a character)
	shWord = `(?:[^\s;&|'"\\]|\\[\s\S]|'[^']*'|"(?:[^"\\]|\\[\s\S])*"|['"])+`
	// the rest of the line after a command's last word: nothing, an operator or a redirection, maybe after the
	// quote that closes the command (sh -c "htpasswd -b f user pw")
	lineEnd = `['"\x60]?[ \t]*(?:$|[;&|<>)]|[0-9]*[<>])`

	passKeys = `(?:pass(?:w(?:or)?d|phrase)?|pwd)(?:_?[0-9]+)?`
	// names of keys, tokens and credentials: *TOKEN, *SECRET, *_KEY, APIKEY, ..., *CREDENTIALS, *_AUTH
	tokenKeys = `(?:\w*(?:token|secret|(?:_|api|access|account|auth|client|encryption|license|master|private|secret|` +
		`signing|storage|shared|subscription)key|credentials?|creds|(?:_|basic|http|proxy)auth)|secret_key_base)(?:_?[0-9]+)?`
	// flag names of keys and tokens: --token, --client-secret, --api-key, --secret-key, --auth-key, ...
	tokenFlags = `token|secret|api[-_]?key|(?:access|secret|account|auth|license|master|encryption|storage|shared|` +
		`subscription|client)[-_]?key|oauth2-bearer`
)

// inCmd returns a pattern's ctx: the arguments of a command named by cmds (an alternation).
func inCmd(cmds string) string { return cmdStart + `(?:` + cmds + `)\b((?:[ \t]+` + shWord + `)*)` }

// inSub returns a pattern's ctx: the arguments after sub (words) of a command named by cmds.
func inSub(cmds, sub string) string {
	return cmdStart + `(?:` + cmds + `)(?:[ \t]+` + shWord + `)*?[ \t]+` + sub + `\b((?:[ \t]+` + shWord + `)*)`
}

// defaultRules are applied before the user's rules, in this order (the package documentation lists them).
var defaultRules = []defaultRule{
	{"password", []pattern{{
		re:    `(?i)(?:^|[^\w-])(?P<name>\w*` + passKeys + `)=` + valueStart + `|"(?P<name>\w*` + passKeys + `)"\s*:\s*` + jsonVal,
		ext:   assign,
		hints: []string{"pass", "pwd"},
		check: func(line, name string, s, e int) bool {
			return passwordName(name) && !isSwitch(line[s:e]) /* ..._PASSWORD=yes */
		},
	}}},
	{"password-flag", []pattern{{
		re:    `(?i)(?:^|[\s'"])--?(?:[\w-]*-)?pass(?:w(?:or)?d|phrase|in|out)?(?:=` + valueStart + `|[ \t]+` + argStart + `)`,
		ext:   word,
		hints: []string{"pass"},
	}}},
	{"mysql-p", []pattern{{
		re:    `[ \t]-p` + wordStart,
		ext:   word,
		hints: []string{"mysql", "mariadb"},
		ctx:   inCmd(`mysql\w*|mariadb[\w-]*`),
	}}},
	{"authorization", []pattern{{
		re: `(?i)\bauthorization:[ \t]*(?:(?:basic|bearer|digest|token|negotiate|ntlm|hoba|mutual|` +
			`aws4-hmac-sha256|apikey|dpop|jwt|oauth|ssws)[ \t]+)?` + wordStart,
		ext:   header,
		hints: []string{"authorization"},
	}}},
	{"bearer", []pattern{{re: `(?i)\bbearer[ \t]+` + wordStart, ext: word, hints: []string{"bearer"}}}},
	{"aws-secret", []pattern{{
		re:    `(?i)(?:^|[^\w${])aws_(?:secret_access_key|session_token)(?:=|:[ \t]*|[ \t]+)` + wordStart,
		ext:   word,
		hints: []string{"aws_s"},
	}}},
	{"token-env", []pattern{{
		re: `(?i)(?:^|[^\w$-])(?P<name>` + tokenKeys + `)=` + valueStart + `|"(?P<name>` + tokenKeys + `)"\s*:\s*` + jsonVal +
			`|[?&](?P<name>sig|signature|x-amz-signature|x-amz-security-token|x-goog-signature)=` + valueStart,
		ext:   assign,
		hints: []string{"token", "secret", "key", "cred", "auth", "sig"},
		check: func(line, name string, s, e int) bool { return secretName(name) && !isSwitch(line[s:e]) },
	}}},
	{"token-flag", []pattern{{
		re:    `(?i)(?:^|[\s'"])--?(?:[\w-]*-)?(?P<name>` + tokenFlags + `)(?:=` + valueStart + `|[ \t]+` + argStart + `)`,
		ext:   word,
		hints: []string{"token", "secret", "key", "bearer"},
		check: func(line, name string, s, e int) bool {
			return !strings.EqualFold(name, "secret") || !secretSpec.MatchString(line[s:e]) /* docker build --secret id=x,src=f */
		},
	}}},
	{"secret-header", []pattern{{
		re: `(?i)(?:^|[\s'"])(?:x-)?(?:api-?key|auth-?token|access-?token|vault-token|private-token|` +
			`(?:set-)?cookie)[ \t]*:[ \t]*` + wordStart,
		ext:   header,
		hints: []string{"key", "token", "cookie"},
	}}},
	{"url-password", []pattern{
		{re: `(?i)\b[a-z][a-z0-9+.-]*://[^\s/?#@:'"]*:(?P<secret>[^\s/?#'"]+)@`, ext: exact, hints: []string{"://"}},
		/* a user that is a token: https://<token>@github.com, https://<token>:x-oauth-basic@github.com */
		{re: `(?i)\b[a-z][a-z0-9+.-]*://(?P<secret>[^\s/?#@:'"]{20,})(?::[^\s/?#'"]*)?@`, ext: exact, hints: []string{"://"},
			check: func(line, _ string, s, e int) bool { return tokenLike(line[s:e]) }},
	}},
	{"curl-user", []pattern{{
		re:    `[ \t](?:-[uU][ \t]*|--(?:proxy-)?user(?:=|[ \t]+))(?:'[^':]*:|"[^":]*:|[^\s:'"]*:)` + wordStart,
		ext:   header,
		hints: []string{"curl"},
		ctx:   inCmd(`curl`),
	}}},
	{"cli-password", cliPasswords},
	{"known-token", knownTokens},
	{"private-key", []pattern{
		{re: `-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<secret>(?s:.)+?)-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----`,
			ext: exact, hints: []string{"private key"}},
		/* no END on the line (cut, or the key goes on in continuation lines): up to the end of the word or quotes */
		{re: `-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----` + wordStart, ext: header, hints: []string{"private key"},
			check: func(line, _ string, s, _ int) bool { return !strings.Contains(line[s:], "-----END") }},
		/* a line that is only base64, such as a key's body pasted into a heredoc or a continuation line */
		{re: `^[ \t]*(?P<secret>[A-Za-z0-9+/]{40,}={0,2})[ \t]*$`, ext: exact,
			check: func(line, _ string, s, e int) bool { return base64Like(line[s:e]) }},
	}},
}

// cliPasswords are the patterns of the cli-password rule: passwords that commands take as a short flag
// (-p, -a, -P, -w), as part of user%password or user:password, or as a positional argument.
var cliPasswords = []pattern{
	/* sshpass -p pw: only among sshpass's own options (ssh -p 22 after it is a port) */
	{re: `[ \t]-p[ \t]*` + valStart, ext: word, hints: []string{"sshpass"},
		ctx: cmdStart + `sshpass\b((?:[ \t]+(?:-[fdP][ \t]+` + shWord + `|-` + shWord + `))*)`},
	/* docker login -p pw, -ppw (and the other registry and cloud logins) */
	{re: `[ \t]-p[ \t]*` + valStart, ext: word, hints: []string{"login"},
		ctx: inSub(`docker|podman|nerdctl|finch|helm|skopeo|buildah|oras|crane|regctl|oc|cf|az`, `login`)},
	/* redis-cli -a pw (its -p is the port) */
	{re: `[ \t]-a[ \t]+` + valStart, ext: word, hints: []string{"redis-", "valkey-", "keydb-"},
		ctx: inCmd(`(?:redis|valkey|keydb)-(?:cli|benchmark)`)},
	/* mongosh -p pw, -ppw (-p alone prompts), cqlsh, cypher-shell */
	{re: `[ \t]-p(?:[ \t]+` + argStart + `|` + valStart + `)`, ext: word, hints: []string{"mongo", "cqlsh", "cypher-shell"},
		ctx: inCmd(`mongo(?:sh|dump|restore|export|import|files|stat|top)?|cqlsh|cypher-shell`)},
	/* -p pw, a separate word */
	{re: `[ \t]-p[ \t]+` + argStart, ext: word,
		hints: []string{"twine", "smbmap", "crackmapexec", "netexec", "nxc", "evil-winrm", "racadm", "useradd", "usermod", "rdesktop"},
		ctx:   inCmd(`twine|smbmap|crackmapexec|netexec|nxc|evil-winrm|racadm|useradd|usermod|rdesktop`), check: notEmpty},
	/* -P pw, -Ppw */
	{re: `[ \t]-P[ \t]*` + valStart, ext: word, hints: []string{"sqlcmd", "bcp", "osql", "ipmitool", "mosquitto_"},
		ctx: inCmd(`sqlcmd|bcp|osql|ipmitool|mosquitto_(?:pub|sub|rr)`)},
	/* ldapsearch -w pw (-W prompts); ldappasswd -a old -s new */
	{re: `[ \t]-[xLnvcZMNu]*w[ \t]*` + valStart, ext: word, hints: []string{"ldap"},
		ctx: inCmd(`ldap(?:search|modify|add|delete|whoami|passwd|compare|modrdn|exop|vi|url)`)},
	{re: `[ \t]-[xvnZ]*[as][ \t]*` + valStart, ext: word, hints: []string{"ldappasswd"}, ctx: inCmd(`ldappasswd`)},
	/* zip -P pw, unzip -P pw; 7z -ppw; rar -ppw, -hppw (-p- means none) */
	{re: `[ \t]-[A-Za-z0-9]*P[ \t]*` + valStart, ext: word, hints: []string{"zip"}, ctx: inCmd(`(?:un)?zip`)},
	{re: `[ \t]-p` + valStart, ext: word, hints: []string{"7z"}, ctx: inCmd(`7z[azr]?|7zz`)},
	{re: `[ \t]-h?p(?P<secret>[^\s;&|-])`, ext: word, hints: []string{"rar"}, ctx: inCmd(`(?:un)?rar`)},
	/* openssl enc -k pw, -K hexkey; openssl passwd [-6] [-salt s] pw */
	{re: `[ \t]-[kK][ \t]+` + argStart, ext: word, hints: []string{"openssl"}, ctx: inCmd(`openssl`)},
	{re: cmdStart + `openssl[ \t]+passwd(?:[ \t]+-(?:salt|in)[ \t]+` + shWord + `|[ \t]+-[^\s;&|]+)*[ \t]+(?P<secret>[^\s;&|<>()-])`,
		ext: word, hints: []string{"openssl"}},
	/* keytool -storepass pw -keypass pw */
	{re: `[ \t]-(?:(?:src|dest)?(?:store|key)pass|new)[ \t]+` + valStart, ext: word, hints: []string{"keytool", "jarsigner"},
		ctx: inCmd(`keytool|jarsigner`)},
	/* ssh-keygen -N new -P old ('' is no passphrase) */
	{re: `[ \t]-[qv]*[NP][ \t]*` + valStart, ext: word, hints: []string{"ssh-keygen"}, ctx: inCmd(`ssh-keygen`), check: notEmpty},
	/* snmpwalk -A authpass -X privpass, -c community */
	{re: `[ \t]-[AXc][ \t]*` + valStart, ext: word, hints: []string{"snmp"},
		ctx: inCmd(`snmp(?:walk|bulkwalk|get|getnext|bulkget|set|table|trap|inform|status|df|netstat|delta|test|usm|vacm)`)},
	/* xfreerdp /p:pw */
	{re: `[ \t]['"]?[/-]p(?:th)?:` + wordStart, ext: header, hints: []string{"freerdp"}, ctx: inCmd(`(?:x|wl|sdl-)?freerdp3?`)},
	/* smbclient -U user%pw, lftp -u user,pw, etcdctl --user user:pw, httpie -a user:pw */
	{re: `[ \t](?:-U[ \t]*|--user(?:=|[ \t]+))['"]?[^\s%'"]*%` + wordStart, ext: header,
		hints: []string{"smb", "rpcclient", "net"}, ctx: inCmd(`smbclient|rpcclient|smbcacls|smbcquotas|smbget|smbtree|net`)},
	{re: `[ \t]-u[ \t]*['"]?[^\s,'"]*,` + wordStart, ext: header, hints: []string{"lftp"}, ctx: inCmd(`lftp`)},
	{re: `[ \t]--user(?:=|[ \t]+)['"]?[^\s:'"]*:` + wordStart, ext: header, hints: []string{"etcdctl"}, ctx: inCmd(`etcdctl`)},
	{re: `[ \t](?:-a[ \t]*|--auth(?:=|[ \t]+))['"]?[^\s:'"]*:` + wordStart, ext: header, hints: []string{"http", "xh"},
		ctx: inCmd(`https?|xhs?`)},
	/* sqlplus user/pw@db, sqlldr userid=user/pw */
	{re: `[ \t]['"]?(?:userid=)?[A-Za-z0-9_$#.]+/(?P<secret>"[^"]*"|[^\s@;&|'"/]+)`, ext: exact,
		hints: []string{"sqlplus", "sqlldr", "expdp", "impdp", "rman", "dgmgrl"}, ctx: inCmd(`sqlplus|sqlldr|expdp|impdp|rman|dgmgrl`)},
	/* gh secret set NAME --body value; kubectl create secret generic x --from-literal=key=value */
	{re: `[ \t](?:-b[ \t]*|--body(?:=|[ \t]+))` + wordStart, ext: word, hints: []string{"gh"}, ctx: inSub(`gh`, `secret[ \t]+set`)},
	{re: `[ \t]--from-literal(?:=|[ \t]+)['"]?[^\s='"]+=` + wordStart, ext: header, hints: []string{"secret"},
		ctx: inSub(`kubectl|oc`, `secret`)},
	/* nmcli ... password pw, wifi-sec.psk pw; wpa_passphrase ssid pw */
	{re: `[ \t](?:password|wifi-sec\.psk|802-11-wireless-security\.psk)[ \t]+` + valStart, ext: word, hints: []string{"nmcli"},
		ctx: inCmd(`nmcli`)},
	{re: cmdStart + `wpa_passphrase[ \t]+` + shWord + `[ \t]+` + valStart, ext: word, hints: []string{"wpa_passphrase"}},
	/* positional: htpasswd -b[c] file user pw (the last word), vault login [-flags] TOKEN (the last word, not
	   K=V), mc alias set name url key SECRET, rabbitmqctl add_user name pw */
	{re: cmdStart + `htpasswd(?:[ \t]+[^\s;&|]+)*?[ \t]+-[A-Za-z]*b[A-Za-z]*(?:[ \t]+` + shWord + `)*?[ \t]+` +
		`(?P<secret>` + shWord + `)` + lineEnd, ext: word, hints: []string{"htpasswd"}, check: lastWord},
	{re: cmdStart + `(?:vault|bao)[ \t]+login(?:[ \t]+-[^\s;&|]*)*[ \t]+(?P<secret>[^\s;&|<>()=-][^\s;&|<>()=]*)` + lineEnd,
		ext: word, hints: []string{"login"}, check: lastWord},
	{re: cmdStart + `mc[ \t]+(?:alias[ \t]+set|config[ \t]+host[ \t]+add)(?:[ \t]+` + shWord + `){3}[ \t]+` + argStart,
		ext: word, hints: []string{"mc"}},
	{re: cmdStart + `rabbitmqctl(?:[ \t]+` + shWord + `)*?[ \t]+(?:add_user|change_password|authenticate_user)[ \t]+` + shWord +
		`[ \t]+` + valStart, ext: word, hints: []string{"rabbitmqctl"}},
	/* SQL: IDENTIFIED BY 'pw', WITH PASSWORD 'pw', SET PASSWORD = 'pw'; redis CONFIG SET requirepass pw */
	{re: `(?i)\b(?:identified(?:[ \t]+with[ \t]+\w+)?[ \t]+by|(?:with|login|(?:user|role)[ \t]+\S+)(?:[ \t]+encrypted)?[ \t]+password|` +
		`set[ \t]+password(?:[ \t]+for[ \t]+\S+)?[ \t]*=[ \t]*(?:password[ \t]*\([ \t]*)?)[ \t]*(?P<secret>['"])`,
		ext: word, hints: []string{"identified", "password"}},
	{re: `(?i)(?:^|[ \t'"])(?:requirepass|masterauth)[ \t]+` + argStart, ext: word, hints: []string{"requirepass", "masterauth"}},
	/* echo user:pw | chpasswd, chpasswd <<< user:pw */
	{re: cmdStart + `(?:echo|printf)(?:[ \t]+-[neE]+)*[ \t]+['"]?[^\s:'"|;&]+:(?P<secret>[^\s'"|;&])[^|;&]*\|[ \t]*` +
		`(?:sudo(?:[ \t]+-[^\s;&|]+)*[ \t]+)?(?:/usr/sbin/)?chpasswd\b`, ext: header, hints: []string{"chpasswd"}},
	{re: `\bchpasswd[ \t]*<<<[ \t]*['"]?[^\s:'"]+:(?P<secret>[^\s'"])`, ext: header, hints: []string{"chpasswd"}},
	/* echo pw | passwd --stdin user, echo pw | sudo -S cmd */
	{re: cmdStart + `(?:echo|printf)(?:[ \t]+-[neE]+)*[ \t]+(?P<secret>[^\s|;&-])[^|;&]*\|[ \t]*(?:` +
		`(?:sudo(?:[ \t]+-[^\s;&|]+)*[ \t]+)?(?:/usr/bin/)?passwd\b|` +
		`sudo(?:[ \t]+-[A-Za-z]*[ugpChDrtTUR][ \t]+[^\s;&|]+|[ \t]+-[A-Za-z-]+(?:=[^\s;&|]*)?)*?[ \t]+-[A-Za-z]*S[A-Za-z]*(?:[ \t]|$))`,
		ext: word, hints: []string{"passwd", "sudo"}},
}

// knownTokens are the patterns of the known-token rule: tokens whose format gives them away, anywhere.
var knownTokens = []pattern{
	{re: `(?:^|[^A-Za-z0-9_])(?P<secret>` +
		`gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|` + // GitHub
		`gl(?:pat|dt|ptt|rt|cbt|oas|soat|ffct|imt|agent|ft|wt)-[A-Za-z0-9_-]{20,}|` + // GitLab
		`xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}|` + // Slack
		`(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}|` + // Stripe (pk_ keys are public)
		`AIza[0-9A-Za-z_-]{35}|` + // Google API key
		`npm_[A-Za-z0-9]{36,}|pypi-[A-Za-z0-9_-]{50,}|hf_[A-Za-z0-9]{30,}|` + // npm, PyPI, Hugging Face
		`hv[sbr]\.[A-Za-z0-9_-]{24,}|tskey-[A-Za-z0-9-]{20,}|` + // Vault, Tailscale
		`do[opr]_v1_[a-f0-9]{64}|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}|AGE-SECRET-KEY-1[0-9A-Z]{58}|` + // DigitalOcean, SendGrid, age
		`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)`, // a JWT
		ext: exact,
		hints: []string{"gh", "github_pat_", "gl", "xox", "xapp-", "sk_", "rk_", "whsec_", "aiza", "npm_", "pypi-", "hf_",
			"hvs.", "hvb.", "hvr.", "tskey-", "_v1_", "sg.", "age-secret-key-", "eyj"}},
	/* AWS access key ids */
	{re: `(?:^|[^A-Za-z0-9_])(?P<secret>(?:AKIA|ASIA)[A-Z0-9]{16})(?:$|[^A-Za-z0-9])`, ext: exact, hints: []string{"akia", "asia"}},
	/* OpenAI-like sk-... keys, Vault's older s.... tokens (mixed case and digits: not a branch named sk-fix-...) */
	{re: `(?:^|[^A-Za-z0-9_.])(?:(?P<secret>sk-[A-Za-z0-9_-]{32,})|(?P<secret>[sbr]\.[A-Za-z0-9]{24})(?:$|[^A-Za-z0-9_.-]))`, ext: exact,
		hints: []string{"sk-", "s.", "b.", "r."},
		check: func(line, _ string, s, e int) bool { return mixedCase(line[s+2 : e]) }},
	/* webhook URLs whose path is the secret */
	{re: `(?i)hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]+)|` +
		`discord(?:app)?\.com/api/webhooks/[0-9]+/(?P<secret>[A-Za-z0-9_-]+)`,
		ext: exact, hints: []string{"hooks.slack.com", "discord"}},
}

// secretSpec is the value of docker/podman/buildkit --secret: a specification, not the secret.
var secretSpec = regexp.MustCompile(`(?i)^['"]?(?:id|src|source|type|target|env|uid|gid|mode|required)=`)

// notKeys are the words before _KEY in names whose value is not a secret (SORT_KEY, PUBLIC_KEY, SSH_KEY=path).
var notKeys = map[string]bool{
	"public": true, "pub": true, "sort": true, "primary": true, "partition": true, "foreign": true, "cache": true,
	"hash": true, "range": true, "row": true, "index": true, "lookup": true, "map": true, "group": true, "routing": true,
	"object": true, "s3": true, "bucket": true, "gpg": true, "pgp": true, "ssh": true, "host": true, "idempotency": true,
	"dedup": true, "cursor": true, "shard": true, "unique": true, "composite": true, "lock": true, "kv": true,
}

// passwordName says whether the password rule's name is a password's: not the shell's PWD and OLDPWD, not
// a program (SSH_ASKPASS=/usr/lib/ssh/x11-ssh-askpass), not BYPASS or COMPASS.
func passwordName(name string) bool {
	n := strings.ToLower(name)
	return name != "PWD" && name != "OLDPWD" &&
		!strings.HasSuffix(n, "askpass") && !strings.HasSuffix(n, "bypass") && !strings.HasSuffix(n, "compass")
}

// secretName says whether token-env's name is a secret's: not a *_KEY that names something else, not
// AWS_SECRET_ACCESS_KEY (aws-secret's), not GOOGLE_APPLICATION_CREDENTIALS (a file's path).
func secretName(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "aws_secret_access_key", "google_application_credentials":
		return false
	}
	if k, ok := strings.CutSuffix(n, "_key"); ok {
		return !notKeys[k[strings.LastIndexByte(k, '_')+1:]]
	}
	return true
}

// isSwitch says whether an assignment's value is a switch (MYSQL_ALLOW_EMPTY_PASSWORD=yes, NO_AUTH=true).
func isSwitch(v string) bool {
	switch strings.ToLower(v) {
	case "true", "false", "yes", "no", "on", "off":
		return true
	}
	return false
}

// atLineEnd matches what may follow a command's last word.
var atLineEnd = regexp.MustCompile(`^` + lineEnd)

// lastWord: the secret, as the shell's quoting has it, is its command's last word (the regexp's words may differ
// where quotes are not closed).
func lastWord(line, _ string, _, e int) bool { return atLineEnd.MatchString(line[e:]) }

// notEmpty: a flag's value is not an empty string (” or "").
func notEmpty(line, _ string, s, e int) bool {
	v := line[s:e]
	return v != "''" && v != `""`
}

// tokenLike says whether a URL's user looks like a token: at least 20 letters, digits, '-' and '_', where at
// least 3 in 10 neighbouring characters change class (lower, upper, digit), as in random strings and not in
// names (firstname-lastname-2024).
func tokenLike(u string) bool {
	if len(u) < 20 {
		return false
	}
	changes, last := 0, byte(0)
	for i := 0; i < len(u); i++ {
		var class byte
		switch c := u[i]; {
		case c >= 'a' && c <= 'z':
			class = 'a'
		case c >= 'A' && c <= 'Z':
			class = 'A'
		case c >= '0' && c <= '9':
			class = '0'
		case c == '-' || c == '_':
			continue
		default:
			return false
		}
		if last != 0 && class != last {
			changes++
		}
		last = class
	}
	return changes*10 >= len(u)*3
}

// mixedCase says whether s holds a lower-case letter, an upper-case letter and a digit.
func mixedCase(s string) bool {
	return strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz") && strings.ContainsAny(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") &&
		strings.ContainsAny(s, "0123456789")
}

// base64Like says whether a line of base64 characters looks like encoded random bytes rather than a path or a
// name: mixed case and digits, classes changing often, few slashes (fewer still when it starts with one).
func base64Like(s string) bool {
	slashes := strings.Count(s, "/")
	if s[0] == '/' {
		slashes *= 2
	}
	return slashes*8 <= len(s) && mixedCase(s) && tokenLike(strings.Map(func(r rune) rune {
		if r == '+' || r == '/' || r == '=' {
			return '_'
		}
		return r
	}, s))
}

// DefaultRules returns the built-in rules, in the order they are applied. Their patterns only find where a
// secret starts; where it ends is found from the shell's quoting (see the package documentation), which user
// rules do not get: a user rule hides exactly what its group matches. A rule made of several regexps has them
// joined as alternatives; some of them also look at the command a flag belongs to or check what they found,
// which the pattern does not show.
func DefaultRules() []Rule {
	rules := make([]Rule, len(defaultRules))
	for i, r := range defaultRules {
		res := make([]string, len(r.pats))
		for j, p := range r.pats {
			res[j] = `(?:` + p.re + `)`
		}
		rules[i] = Rule{Name: r.name, Pattern: strings.Join(res, "|")}
		if len(res) == 1 {
			rules[i].Pattern = r.pats[0].re
		}
	}
	return rules
}

// compiledDefaults compiles the default rules once.
var compiledDefaults = sync.OnceValue(func() []compiled {
	cs := make([]compiled, len(defaultRules))
	for i, d := range defaultRules {
		cs[i].name = d.name
		for _, p := range d.pats {
			c, err := compile(d.name, p)
			if err != nil {
				panic(err) // the default patterns are tested
			}
			cs[i].pats = append(cs[i].pats, c)
		}
	}
	return cs
})

type compiled struct {
	name string
	pats []cpattern
}

type cpattern struct {
	re     *regexp.Regexp
	groups []int // capture groups named "secret", in order; nil: group 1, or the whole match without groups
	names  []int // capture groups named "name", in order
	ext    extent
	hints  []string
	ctx    *regexp.Regexp
	check  func(line, name string, s, e int) bool
}

// Redactor hides secrets in command lines. It is safe for concurrent use.
type Redactor struct {
	rules   []compiled
	noHints bool // run every regexp on every line (tests: the hints change nothing)
}

// NewRedactor returns a Redactor applying the default rules, then the user's rules in their order. A user rule
// cannot replace or disable a default one: its name must differ from every other rule's. An invalid rule is an
// error naming it.
func NewRedactor(user []Rule) (*Redactor, error) {
	r := &Redactor{rules: slices.Clone(compiledDefaults())}
	names := map[string]bool{}
	for _, d := range defaultRules {
		names[d.name] = true
	}
	for _, u := range user {
		if u.Name == "" {
			return nil, fmt.Errorf("redaction rule with pattern %q: the rule has no name", u.Pattern)
		}
		if names[u.Name] {
			return nil, fmt.Errorf("redaction rule %q: the name is taken (by a default rule or an earlier rule); "+
				"user rules are added after the defaults and cannot replace them", u.Name)
		}
		if u.Pattern == "" {
			return nil, fmt.Errorf("redaction rule %q: the pattern is empty", u.Name)
		}
		c, err := compile(u.Name, pattern{re: u.Pattern, ext: exact})
		if err != nil {
			return nil, err
		}
		c.names = nil // a user's group "name" is no name
		r.rules = append(r.rules, compiled{name: u.Name, pats: []cpattern{c}})
		names[u.Name] = true
	}
	return r, nil
}

func compile(name string, p pattern) (cpattern, error) {
	re, err := regexp.Compile(p.re)
	if err != nil {
		return cpattern{}, fmt.Errorf("redaction rule %q: pattern %q: %w", name, p.re, err)
	}
	c := cpattern{re: re, ext: p.ext, hints: p.hints, check: p.check}
	for i, n := range re.SubexpNames() {
		switch n {
		case "secret":
			c.groups = append(c.groups, i)
		case "name":
			c.names = append(c.names, i)
		}
	}
	if c.groups == nil && re.NumSubexp() > 0 {
		c.groups = []int{1}
	}
	if p.ctx != "" {
		if c.ctx, err = regexp.Compile(p.ctx); err != nil || c.ctx.NumSubexp() != 1 {
			return cpattern{}, fmt.Errorf("redaction rule %q: context %q: %v (want one group)", name, p.ctx, err)
		}
	}
	return c, nil
}

// secret returns the bounds of the pattern's secret in match m; false if its group took no part.
func (c *cpattern) secret(m []int) (int, int, bool) {
	if c.groups == nil {
		return m[0], m[1], true
	}
	for _, g := range c.groups {
		if m[2*g] >= 0 {
			return m[2*g], m[2*g+1], true
		}
	}
	return 0, 0, false
}

// name returns the text of the pattern's group "name" in match m, or "".
func (c *cpattern) name(line string, m []int) string {
	for _, g := range c.names {
		if m[2*g] >= 0 {
			return line[m[2*g]:m[2*g+1]]
		}
	}
	return ""
}

// Redact returns line with every secret a rule finds replaced by Mask, and the names of the rules that found
// one, in rule order, each once. All rules look at the original line; overlapping secrets become one Mask.
func (r *Redactor) Redact(line string) (out string, fired []string) {
	var spans [][2]int
	var quotes []byte // quote state before each byte, computed at the first match
	folded, isFolded := "", false
	for i := range r.rules {
		c := &r.rules[i]
		hit := false
		for j := range c.pats {
			p := &c.pats[j]
			if p.hints != nil && !r.noHints {
				if !isFolded {
					folded, isFolded = foldCase(line), true
				}
				if !containsAny(folded, p.hints) {
					continue
				}
			}
			var cmds [][]int // the ctx's matches, found at the first match
			for _, m := range p.re.FindAllStringSubmatchIndex(line, -1) {
				s, e, ok := p.secret(m)
				if !ok {
					continue
				}
				if p.ctx != nil {
					if cmds == nil {
						cmds = p.ctx.FindAllStringSubmatchIndex(line, -1)
					}
					if !slices.ContainsFunc(cmds, func(c []int) bool { return c[2] <= m[0] && m[0] < c[3] }) {
						continue
					}
				}
				if p.ext != exact {
					if quotes == nil {
						quotes = quoteStates(line)
					}
					e = secretEnd(line, s, quotes[s], p.ext)
				}
				if e <= s || p.check != nil && !p.check(line, p.name(line, m), s, e) {
					continue
				}
				spans = append(spans, [2]int{s, e})
				hit = true
			}
		}
		if hit {
			fired = append(fired, c.name)
		}
	}
	if len(spans) == 0 {
		return line, nil
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var b strings.Builder
	b.Grow(len(line))
	pos := 0
	for i := 0; i < len(spans); {
		s, e := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= e; i++ {
			e = max(e, spans[i][1])
		}
		b.WriteString(line[pos:s])
		b.WriteString(Mask)
		pos = e
	}
	b.WriteString(line[pos:])
	return b.String(), fired
}

// foldCase returns line in lower case as far as the hints need: ASCII letters, and the two other letters that
// a case-insensitive regexp takes for ASCII ones (U+017F for s, U+212A for k). Other bytes stay.
func foldCase(line string) string {
	b := make([]byte, 0, len(line))
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == 0xc5 && strings.HasPrefix(line[i:], "\u017f"):
			c, i = 's', i+1
		case c == 0xe2 && strings.HasPrefix(line[i:], "\u212a"):
			c, i = 'k', i+2
		}
		b = append(b, c)
	}
	return string(b)
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// quoteStates returns, for each byte of line and for its end, the shell quote it is inside: 0, '\” or '"'.
// A backslash outside single quotes escapes the next byte.
func quoteStates(line string) []byte {
	st := make([]byte, len(line)+1)
	var q byte
	for i := 0; i < len(line); i++ {
		st[i] = q
		c := line[i]
		switch {
		case q != '\'' && c == '\\':
			if i+1 < len(line) {
				i++
				st[i] = q
			}
		case q == 0 && (c == '\'' || c == '"'):
			q = c
		case q != 0 && c == q:
			q = 0
		}
	}
	st[len(line)] = q
	return st
}

// secretEnd returns where a secret that starts at s ends, given the quote q the line is inside at s (the
// default rules' regexps only say where secrets start). It returns s when there is nothing to hide.
//
// Outside quotes the secret is the rest of its shell word: up to a blank or an operator (; & | < > ( )),
// with quoted parts taken whole (PGPASSWORD='x y', password=ab'c d'). Inside quotes a word secret ends at a
// blank, ; & or |, an assignment's value at ; or & (a query string's next parameter), a header's value
// only at the closing quote; all end at the closing quote. Quotes of the other kind inside quotes are taken
// whole (sh -c "mysql -p'x y'"). A JSON string value ("password": "x" in a single-quoted argument) ends
// at the next blank or , } ] after its closing quote.
func secretEnd(line string, s int, q byte, ext extent) int {
	n := len(line)
	if s >= n || (q != 0 && line[s] == q) {
		return s
	}
	i := s
	if q == 0 {
		var in byte
	word:
		for ; i < n; i++ {
			c := line[i]
			switch in {
			case 0:
				switch {
				case c == '\\':
					i++
				case c == '\'' || c == '"':
					in = c
				case isBlank(c) || strings.IndexByte(";&|<>()", c) >= 0:
					break word
				}
			case '\'':
				if c == '\'' {
					in = 0
				}
			case '"':
				if c == '\\' {
					i++
				} else if c == '"' {
					in = 0
				}
			}
		}
		return min(i, n)
	}
inside:
	for i < n {
		c := line[i]
		switch {
		case c == '\\' && q == '"':
			i += 2
			continue
		case c == q:
			break inside
		case c == '\'' || c == '"':
			if i == s && ext == assign && c == '"' && strings.HasSuffix(strings.TrimRight(line[:s], " \t"), ":") {
				ext = quoted /* a JSON string value */
			}
			i = nestedEnd(line, i, q)
			continue
		case ext == word && (isBlank(c) || c == ';' || c == '&' || c == '|'):
			break inside
		case ext == assign && (c == ';' || c == '&'):
			break inside
		case ext == quoted && (isBlank(c) || strings.IndexByte(",}];&|", c) >= 0):
			break inside
		}
		i++
	}
	return min(i, n)
}

// nestedEnd returns the end of the string quoted by line[i] (a quote of the other kind than q, the quote the
// line is inside): just past its closing quote, or at q's closing quote, or at the end of the line. A
// backslash escapes the next byte (a JSON string's \"), except the single quote that ends q.
func nestedEnd(line string, i int, q byte) int {
	nq := line[i]
	for i++; i < len(line); i++ {
		switch line[i] {
		case '\\':
			if q == '"' || i+1 < len(line) && line[i+1] != q { /* nothing escapes a single quote's end */
				i++
			}
		case nq:
			return i + 1
		case q:
			return i
		}
	}
	return len(line)
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}
