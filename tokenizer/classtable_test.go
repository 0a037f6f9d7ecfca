package tokenizer

import (
	"testing"
	"unicode"
)

// The BMP class table must agree with the unicode package everywhere.
func TestClassTable(t *testing.T) {
	for r := rune(0); r < 0x10000; r++ {
		if isSpace(r) != unicode.IsSpace(r) || isL(r) != unicode.IsLetter(r) || isN(r) != unicode.IsNumber(r) ||
			isM(r) != unicode.IsMark(r) || isP(r) != unicode.IsPunct(r) || isS(r) != unicode.IsSymbol(r) {
			t.Fatalf("class mismatch at %U", r)
		}
	}
	for _, r := range []rune{-1, 0x10FFFF + 1} {
		if isSpace(r) || isL(r) || isN(r) || isM(r) || isP(r) || isS(r) {
			t.Fatalf("invalid rune %d has a class", r)
		}
	}
	if !isL(0x20000) || !isS(0x1F999) {
		t.Fatal("astral classes")
	}
}
