package testkit

import (
	"fmt"
	"strings"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// BadFrame is a text frame a broken or hostile client might send, with the
// answer docs/protocol.md promises: an error frame with Code, echoing Nonce
// (empty where the relay cannot trust the nonce), on a connection that stays
// open. Text, if not empty, must never be broadcast.
type BadFrame struct {
	Name  string
	Frame string
	Code  string
	Nonce string
	Text  string
}

// BadFrames is the one table of bad client input, used by the hub's unit
// tests, the relay's integration tests and the e2e suite. Every frame fits
// the default read limit.
var BadFrames = []BadFrame{
	{Name: "malformed JSON", Frame: `{"type":"alert","text":"unclosed`, Code: protocol.CodeInvalid},
	{Name: "trailing garbage", Frame: `{"type":"alert"} x`, Code: protocol.CodeInvalid},
	{Name: "array", Frame: `[1,2,3]`, Code: protocol.CodeInvalid},
	{Name: "string", Frame: `"alert"`, Code: protocol.CodeInvalid},
	{Name: "null", Frame: `null`, Code: protocol.CodeInvalid},
	{Name: "missing type", Frame: `{"text":"typeless","nonce":"n-typeless"}`, Code: protocol.CodeInvalid, Nonce: "n-typeless", Text: "typeless"},
	{Name: "unknown type", Frame: `{"type":"subscribe","nonce":"n-unknown"}`, Code: protocol.CodeInvalid, Nonce: "n-unknown"},
	{Name: "type not a string", Frame: `{"type":1,"nonce":"n-type"}`, Code: protocol.CodeInvalid, Nonce: "n-type"},
	{Name: "text not a string", Frame: `{"type":"alert","text":42,"nonce":"n-num"}`, Code: protocol.CodeInvalid, Nonce: "n-num"},
	{Name: "nonce not a string", Frame: `{"type":"alert","text":"bad nonce","nonce":7}`, Code: protocol.CodeInvalid, Text: "bad nonce"},
	{
		Name:  fmt.Sprintf("text over %d characters", protocol.MaxTextRunes),
		Frame: fmt.Sprintf(`{"type":"alert","text":%q,"nonce":"n-long"}`, strings.Repeat("👽", protocol.MaxTextRunes+1)),
		Code:  protocol.CodeTooLarge, Nonce: "n-long", Text: strings.Repeat("👽", protocol.MaxTextRunes+1),
	},
	{
		// A nonce over the limit is not echoed: it is not a nonce.
		Name:  fmt.Sprintf("nonce over %d characters", protocol.MaxNonceRunes),
		Frame: fmt.Sprintf(`{"type":"alert","text":"long nonce","nonce":%q}`, strings.Repeat("é", protocol.MaxNonceRunes+1)),
		Code:  protocol.CodeTooLarge, Text: "long nonce",
	},
}

// OversizeFrame is larger than the default read limit: the relay closes the
// connection with 1009 (protocol.CloseTooBig).
var OversizeFrame = fmt.Sprintf(`{"type":"alert","text":%q}`, strings.Repeat("x", 5000))
