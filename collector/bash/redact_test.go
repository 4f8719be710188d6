package bash

import (
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"dkebpf/options"
)

func defaultRedactor(t *testing.T) *Redactor {
	t.Helper()
	r, err := NewRedactor(nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDefaultRulesHideSecretsAndKeepContext(t *testing.T) {
	tests := []struct {
		line    string
		want    string
		fired   []string
		secrets []string // none of these may appear in the output
	}{
		{"echo hello", "echo hello", nil, nil},
		{"", "", nil, nil},

		/* password=, passwd=, pwd= (any key ending so), quotes taken whole */
		{"curl 'https://h/login?user=a&password=s3cret&next=/'", "curl 'https://h/login?user=a&password=***&next=/'",
			[]string{"password"}, []string{"s3cret"}},
		{"export PGPASSWORD='x y'", "export PGPASSWORD=***", []string{"password"}, []string{"x y", "'x", "y'"}},
		{`export PGPASSWORD="x y" && psql`, "export PGPASSWORD=*** && psql", []string{"password"}, []string{"x y"}},
		{"MYSQL_PWD=abc mysql -uroot", "MYSQL_PWD=*** mysql -uroot", []string{"password"}, []string{"abc"}},
		{"a Passwd=x1 b pwd=y2;c", "a Passwd=*** b pwd=***;c", []string{"password"}, []string{"x1", "y2"}},
		{"password=ab'c d'e f", "password=*** f", []string{"password"}, []string{"ab", "c d", "'e"}},
		{"export PGPASSWORD='abc", "export PGPASSWORD=***", []string{"password"}, []string{"abc"}}, // cut line
		{`docker run -e "MYSQL_ROOT_PASSWORD=my secret" mysql`, `docker run -e "MYSQL_ROOT_PASSWORD=***" mysql`,
			[]string{"password"}, []string{"my secret"}},
		{`psql "host=db password=s3 cret dbname=x"`, `psql "host=db password=***"`, []string{"password"}, []string{"s3", "cret"}},
		{`curl -d '{"user":"a","password":"p w","n":1}' h`, `curl -d '{"user":"a","password":***,"n":1}' h`,
			[]string{"password"}, []string{"p w"}},
		{`curl -d '{"password": "p\"q"}' h`, `curl -d '{"password": ***}' h`, []string{"password"}, []string{`p\"q`, "q"}},
		{"password= x", "password= x", nil, nil},

		/* --password VALUE, --password=VALUE, -pass pass:X; a value-less --password prompts */
		{"mysql --password=secret db", "mysql --password=*** db", []string{"password-flag"}, []string{"secret"}},
		{"docker login --password hunter2 --username me", "docker login --password *** --username me",
			[]string{"password-flag"}, []string{"hunter2"}},
		{"wget --http-password='a b' u", "wget --http-password=*** u", []string{"password-flag"}, []string{"a b"}},
		{"openssl enc -pass pass:s3cret", "openssl enc -pass ***", []string{"password-flag"}, []string{"s3cret"}},
		{"openssl rsa -passin pass:s3 -passout pass:s4", "openssl rsa -passin *** -passout ***", []string{"password-flag"}, []string{"s3", "s4"}},
		{"mysql -ppassword db", "mysql -p*** db", []string{"mysql-p"}, []string{"password"}},
		{"mysql --password -u root", "mysql --password -u root", nil, nil},

		/* mysql -pSECRET; -p alone prompts, -P is the port */
		{"mysql -uroot -psecret db", "mysql -uroot -p*** db", []string{"mysql-p"}, []string{"secret"}},
		{"mysql -u root -p db", "mysql -u root -p db", nil, nil},
		{"mysql -h h -P3306 -u root -p", "mysql -h h -P3306 -u root -p", nil, nil},
		{"mysqldump -p'my pass' db > x.sql", "mysqldump -p*** db > x.sql", []string{"mysql-p"}, []string{"my pass", "pass'"}},
		{"sudo /usr/bin/mariadb -h db -pS3cr3t", "sudo /usr/bin/mariadb -h db -p***", []string{"mysql-p"}, []string{"S3cr3t"}},
		{`sh -c "mysqladmin -uroot -p'x y' status"`, `sh -c "mysqladmin -uroot -p*** status"`, []string{"mysql-p"}, []string{"x y"}},
		{"ls -pfoo", "ls -pfoo", nil, nil},
		{"mysql -uroot; ls -pfoo", "mysql -uroot; ls -pfoo", nil, nil},

		/* Authorization headers keep their scheme; Bearer tokens anywhere */
		{`curl -H "Authorization: Bearer abc.def" https://x`, `curl -H "Authorization: Bearer ***" https://x`,
			[]string{"authorization", "bearer"}, []string{"abc", "def"}},
		{"curl -H 'Authorization: Basic dXNlcjpwYXNz' x", "curl -H 'Authorization: Basic ***' x",
			[]string{"authorization"}, []string{"dXNlcjpwYXNz"}},
		{"curl -H Authorization:abc123 http://x", "curl -H Authorization:*** http://x", []string{"authorization"}, []string{"abc123"}},
		{`curl -H 'authorization: Digest username="a", response="b c"' x`, `curl -H 'authorization: Digest ***' x`,
			[]string{"authorization"}, []string{"response", "b c"}},
		{`curl -H "Authorization: token1 token2" x`, `curl -H "Authorization: ***" x`,
			[]string{"authorization"}, []string{"token1", "token2"}},
		{"TOKEN=$(vault print token); echo Bearer eyJhbGciOi.x-y_z", "TOKEN=***(vault print token); echo Bearer ***",
			[]string{"bearer", "token-env"}, []string{"eyJ"}},

		/* AWS secret key, *_TOKEN / *_SECRET / api keys, token flags */
		{"export AWS_SECRET_ACCESS_KEY=wJalr/K7MDENG", "export AWS_SECRET_ACCESS_KEY=***", []string{"aws-secret"}, []string{"wJalr"}},
		{"aws configure set aws_secret_access_key wJalr/K7", "aws configure set aws_secret_access_key ***",
			[]string{"aws-secret"}, []string{"wJalr"}},
		{"echo $AWS_SECRET_ACCESS_KEY | wc -c", "echo $AWS_SECRET_ACCESS_KEY | wc -c", nil, nil},
		{"GITHUB_TOKEN=ghp_x1 CLIENT_SECRET='s s' OPENAI_API_KEY=sk-1 run", "GITHUB_TOKEN=*** CLIENT_SECRET=*** OPENAI_API_KEY=*** run",
			[]string{"token-env"}, []string{"ghp_x1", "s s", "sk-1"}},
		{`curl -d '{"access_token":"t0k"}' h`, `curl -d '{"access_token":***}' h`, []string{"token-env"}, []string{"t0k"}},
		{"kubectl --token=eyJ.x get pods", "kubectl --token=*** get pods", []string{"token-flag"}, []string{"eyJ"}},
		{"vault login --api-key abc get", "vault login --api-key *** get", []string{"token-flag"}, []string{"abc"}},

		/* other secret headers, URL passwords, curl -u */
		{"curl -H 'X-Api-Key: k 1' -H 'Cookie: sid=s1; a=b' x", "curl -H 'X-Api-Key: ***' -H 'Cookie: ***' x",
			[]string{"secret-header"}, []string{"k 1", "s1"}},
		{"git clone https://oauth2:glpat-abc@gitlab.com/g/r.git", "git clone https://oauth2:***@gitlab.com/g/r.git",
			[]string{"url-password"}, []string{"glpat"}},
		{"redis-cli -u redis://:p@ss@h:6379/0", "redis-cli -u redis://:***@h:6379/0", []string{"url-password"}, []string{"p@ss"}},
		{"curl http://host:8080/x@y", "curl http://host:8080/x@y", nil, nil},
		{"curl -u admin:s3cret http://x", "curl -u admin:*** http://x", []string{"curl-user"}, []string{"s3cret"}},
		{"curl -s -u 'admin:p w' http://x", "curl -s -u 'admin:***' http://x", []string{"curl-user"}, []string{"p w"}},
		{"curl --user=admin:pw http://x", "curl --user=admin:*** http://x", []string{"curl-user"}, []string{"pw"}},
		{"curl -u admin http://x", "curl -u admin http://x", nil, nil},

		/* several rules on one line, reported in rule order */
		{"mysql -pX1 --password=X2 && curl -u a:X3 https://u:X4@h", "mysql -p*** --password=*** && curl -u a:*** https://u:***@h",
			[]string{"password-flag", "mysql-p", "url-password", "curl-user"}, []string{"X1", "X2", "X3", "X4"}},
	}
	r := defaultRedactor(t)
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, fired := r.Redact(tt.line)
			if got != tt.want || !reflect.DeepEqual(fired, tt.fired) {
				t.Errorf("Redact(%q)\n got %q %q\nwant %q %q", tt.line, got, fired, tt.want, tt.fired)
			}
			for _, s := range tt.secrets {
				if strings.Contains(got, s) {
					t.Errorf("Redact(%q) = %q still holds %q", tt.line, got, s)
				}
			}
		})
	}
}

func TestUserRulesAreAppliedAfterTheDefaults(t *testing.T) {
	r, err := NewRedactor([]Rule{
		{Name: "pin", Pattern: `--pin[= ](?P<secret>\d+)`},        // named group
		{Name: "card", Pattern: `card:(\d{4})-\d{4}`},             // group 1
		{Name: "internal-host", Pattern: `\bdb\.corp\.example\b`}, // no group: the whole match
		{Name: "optional", Pattern: `sig(?:=(x+))?`},              // group 1 may not take part
	})
	if err != nil {
		t.Fatal(err)
	}
	got, fired := r.Redact("tool --pin 1234 card:1111-2222 sig -h db.corp.example --password=pw")
	want := "tool --pin *** card:***-2222 sig -h *** --password=***"
	if got != want || !reflect.DeepEqual(fired, []string{"password-flag", "pin", "card", "internal-host"}) {
		t.Errorf("got %q %q, want %q [password-flag pin card internal-host]", got, fired, want)
	}
}

func TestBadUserRulesAreErrorsNamingTheRule(t *testing.T) {
	_, reErr := regexp.Compile(`(`)
	tests := []struct {
		rule Rule
		want []string
	}{
		{Rule{Name: "broken", Pattern: `(`}, []string{`"broken"`, `"("`, reErr.Error()}},
		{Rule{Name: "", Pattern: `x`}, []string{`"x"`, "no name"}},
		{Rule{Name: "empty", Pattern: ``}, []string{`"empty"`, "empty"}},
		{Rule{Name: "password", Pattern: `x`}, []string{`"password"`, "taken"}},
	}
	for _, tt := range tests {
		_, err := NewRedactor([]Rule{tt.rule})
		if err == nil {
			t.Errorf("NewRedactor(%+v) succeeded", tt.rule)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewRedactor(%+v): error %q does not contain %q", tt.rule, err, w)
			}
		}
	}
	if _, err := NewRedactor([]Rule{{Name: "a", Pattern: "x"}, {Name: "a", Pattern: "y"}}); err == nil {
		t.Error("two user rules named a were accepted")
	}
}

// defaultRuleNames are the default rules, in order.
var defaultRuleNames = []string{"password", "password-flag", "mysql-p", "authorization", "bearer", "aws-secret",
	"token-env", "token-flag", "secret-header", "url-password", "curl-user", "cli-password", "known-token", "private-key"}

func TestDefaultRulesAreListedInOrderAndCompile(t *testing.T) {
	var names []string
	for _, r := range DefaultRules() {
		names = append(names, r.Name)
		if _, err := regexp.Compile(r.Pattern); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
	}
	if !reflect.DeepEqual(names, defaultRuleNames) {
		t.Errorf("DefaultRules names = %q, want %q", names, defaultRuleNames)
	}
}

func TestTheAgentKnowsTheDefaultRuleNames(t *testing.T) {
	if !reflect.DeepEqual(options.BuiltinRedactRules, defaultRuleNames) {
		t.Errorf("options.BuiltinRedactRules = %q, want %q: the agent refuses user rules by these names",
			options.BuiltinRedactRules, defaultRuleNames)
	}
}

func TestQuoteStates(t *testing.T) {
	line := `a'b"c'd"e\"f"g`
	want := []byte{0, 0, '\'', '\'', '\'', '\'', 0, 0, '"', '"', '"', '"', '"', 0, 0}
	if got := quoteStates(line); !reflect.DeepEqual(got, want) {
		t.Errorf("quoteStates(%q) = %q, want %q", line, got, want)
	}
}

// TestRedactionHidesGeneratedSecretsWhole puts random secrets, bare and quoted, where the default rules look
// and checks that exactly the secret (quotes included) became the mask.
func TestRedactionHidesGeneratedSecretsWhole(t *testing.T) {
	const (
		bare     = "ABCXYZabcxyz0123456789!%^*_+.,:~=@/-"
		inSingle = bare + ` ";&|<>()$\`
		inDouble = bare + ` ';&|<>()`
	)
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(alphabet string) string {
		b := make([]byte, 1+rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	/* a bare word, or a quoted string of anything its quotes can hold */
	shellWord := func() string {
		switch rng.IntN(3) {
		case 1:
			return "'" + word(inSingle) + "'"
		case 2:
			return `"` + word(inDouble) + `"`
		}
		return word(strings.TrimPrefix(bare, "-")[:len(bare)-1]) + "x" // a bare word after a flag does not start with '-'
	}
	from := func(alphabet string) func() string { return func() string { return word(alphabet) } }
	contexts := []struct {
		line   string // @@ marks the secret
		secret func() string
	}{
		{"export DB_PASSWORD=@@; run", shellWord},
		{"mysql -uroot -p@@ db", shellWord},
		{"docker login --password @@ -u me", shellWord},
		{"GITHUB_TOKEN=@@ gh pr list", shellWord},
		{"curl -u admin:@@ http://h", shellWord},
		{"aws configure set aws_secret_access_key @@", shellWord},
		{"mysql --password=@@ db", shellWord},
		{"kubectl --token @@ get pods", shellWord},
		{"curl -H Authorization:@@ http://h", shellWord},
		{"X=1 CLIENT_SECRET=@@|tee f", shellWord},
		{`curl -H "Authorization: Bearer @@" https://h`, from("ABCXYZabcxyz0123456789-._~+/=")},
		{`curl -H "Authorization: Basic @@" https://h`, func() string { return "x" + word(bare+" ';&|<>()") }},
		{"curl -H 'X-Api-Key: @@' https://h", func() string { return "k" + word(inSingle) }},
		{"curl 'https://h/?a=1&password=@@&b=2'", from("ABCXYZabcxyz0123456789%.-_~+")},
		{`docker run -e "MYSQL_ROOT_PASSWORD=@@" mysql`, from(bare + " '|<>()")},
		{`sh -c "mysql -uroot -p@@ -e status"`, func() string {
			if rng.IntN(2) == 0 {
				return "'" + word(bare+` ;&|`) + "'"
			}
			return word("ABCXYZabcxyz0123456789!%^*_+.,:~=@/")
		}},
		{`curl -d '{"user":"u","password":@@}' h`, func() string { return `"` + word(bare+` {}:,`) + `"` }},
		{"git clone https://u:@@@h/r.git", from("ABCXYZabcxyz0123456789!%^*_+.,:~=@-")},
	}
	r := defaultRedactor(t)
	for _, c := range contexts {
		for range 300 {
			s := c.secret()
			line := strings.Replace(c.line, "@@", s, 1)
			want := strings.Replace(c.line, "@@", Mask, 1)
			if got, _ := r.Redact(line); got != want {
				t.Errorf("Redact(%q) = %q, want %q", line, got, want)
			}
		}
	}
}
