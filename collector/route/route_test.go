package route

import "testing"

func TestTemplate(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		// Nothing to replace: the path itself.
		{"/", "/"},
		{"", ""},
		{"/api/v1/users", "/api/v1/users"},
		{"/static/app.js", "/static/app.js"},
		{"/blog/my-first-post-of-2024", "/blog/my-first-post-of-2024"},
		{"/cafe/deadbeef", "/cafe/deadbeef"},           // hexadecimal words, short
		{"/getUser2", "/getUser2"},                     // mixed case, short
		{"/abcdefabcdefabcdef", "/abcdefabcdefabcdef"}, // hexadecimal letters, no digit
		{"/docs//index.html", "/docs//index.html"},
		{"/a%20b", "/a%20b"},
		// Numbers.
		{"/users/123", "/users/{id}"},
		{"/users/123/orders/45", "/users/{id}/orders/{id}"},
		{"/users/123/", "/users/{id}/"},
		{"/0", "/{id}"},
		{"/images/12345.png", "/images/{id}.png"},
		{"/v2/items/7/edit", "/v2/items/{id}/edit"},
		// UUIDs, either case.
		{"/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/orders/{uuid}"},
		{"/orders/3F2504E0-4F89-11D3-9A0C-0305E82C3301/items", "/orders/{uuid}/items"},
		{"/orders/3f2504e0-4f89-11d3-9a0c-0305e82c330", "/orders/3f2504e0-4f89-11d3-9a0c-0305e82c330"}, // one short: its parts are words
		// Hashes and object ids.
		{"/files/d41d8cd98f00b204e9800998ecf8427e", "/files/{hash}"},
		{"/files/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.tar.gz", "/files/{hash}.tar.gz"},
		{"/objects/507f1f77bcf86cd799439011", "/objects/{hash}"},
		{"/commit/0123456789abcdef", "/commit/{hash}"},
		// Tokens: API keys, sessions, JWTs.
		{"/reset/Xy7kP2qLm9Rt4Vw8Zb3N", "/reset/{token}"},
		{"/hooks/sk_live_51H8xYzABCdefGHI", "/hooks/{token}"},
		{"/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", "/t/{token}"},
		// Email addresses.
		{"/users/alice@example.com/profile", "/users/{email}/profile"},
		{"/users/alice%40example.com", "/users/{email}"},
		{"/@home", "/@home"},
	} {
		if got := Template(tc.path); got != tc.want {
			t.Errorf("Template(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestTemplateKeepsAPathWithoutIdentifiers(t *testing.T) {
	p := "/api/v1/users/list"
	if n := testing.AllocsPerRun(100, func() { Template(p) }); n != 0 {
		t.Errorf("Template allocated %v times for a path without identifiers", n)
	}
}

func BenchmarkTemplate(b *testing.B) {
	for range b.N {
		Template("/api/v1/users/123/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301")
	}
}
