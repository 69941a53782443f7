package hub

import "testing"

// FuzzFrameGuard feeds the frame guard's header parser any bytes, split at
// any point: it never panics, and where TCP happens to split the stream
// does not change what it decides.
func FuzzFrameGuard(f *testing.F) {
	f.Add(rawFrame(1, true, `{"type":"alert"}`), uint8(3))
	f.Add(append(rawFrame(1, false, "{"), rawFrame(0, true, "}")...), uint8(1))
	f.Add([]byte{0x81, 0xfe, 0x01, 0x00, 0, 0, 0, 0}, uint8(5))                // 16-bit length
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0}, uint8(9)) // 64-bit length
	f.Add(append(rawFrame(1, false, ""), make([]byte, 200)...), uint8(6))      // empty continuations
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		// Both parsers spend the same frame budget (frameBurst) in the
		// same order; they could only disagree if one took a refill's
		// time (20 ms) longer to reach frame frameBurst+1.
		whole := &guardedConn{}
		errWhole := whole.scan(data)
		parts := &guardedConn{}
		var errParts error
		step := int(split%16) + 1
		for i := 0; i < len(data) && errParts == nil; i += step {
			errParts = parts.scan(data[i:min(i+step, len(data))])
		}
		if errWhole != errParts {
			t.Fatalf("whole: %v, in chunks of %d: %v", errWhole, step, errParts)
		}
		if errWhole == nil && (whole.skip != parts.skip || whole.hdrLen != parts.hdrLen || whole.msgFrames != parts.msgFrames) {
			t.Fatalf("whole and chunked parsers disagree: %+v vs %+v", whole, parts)
		}
	})
}
