package names

import "testing"

func TestSubscriptionName(t *testing.T) {
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct{ prefix, alloc, want string }{
		{"ID_", "3d8d9e2ab35e89", "ID_3d8d9e2ab35e89"},
		{"ID_", "dev-1", "ID_dev-1"},
		{"ID_", "a b/c:d", "ID_a_b_c_d"},
		{"ID_", "é", "ID__"},
		{"", "7abc", "ID_7abc"},
		{"", "google", "ID_google"},
		{"", "x", "x__"},
		{"ID_", string(long), "ID_" + string(long[:252])},
	} {
		if got := Subscription(tc.prefix, tc.alloc); got != tc.want {
			t.Errorf("Subscription(%q, %q) = %q, want %q", tc.prefix, tc.alloc, got, tc.want)
		}
	}
}

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		s          string
		id, prefix bool
	}{
		{"ALIEN_NOTIFICATIONS", true, true},
		{"ID_", true, true},
		{"ID", false, true},
		{"7up", false, false},
		{"goog-topic", false, false},
		{"Google", false, false},
		{"a b", false, false},
		{"", false, false},
	} {
		if got := ValidID(tc.s); got != tc.id {
			t.Errorf("ValidID(%q) = %v, want %v", tc.s, got, tc.id)
		}
		if got := ValidPrefix(tc.s); got != tc.prefix {
			t.Errorf("ValidPrefix(%q) = %v, want %v", tc.s, got, tc.prefix)
		}
	}
}
