package stories260k

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"
)

// The embedded files must be the ones whose provenance README.md records.
func TestFilesMatchProvenance(t *testing.T) {
	want := map[string]string{
		"model.safetensors":      "8350951a717013ad9fb8d2121eb1d758855036a9db044c6d645512cfb82172e7",
		"config.json":            "6071990eee0cd20a16ed3715e50cb285b16959cd971c7cbd4b61438bc44b0f69",
		"generation_config.json": "2bd54026802402eb7cde2ada7a8e8c2ca75445b59fa56d3fd2af6bd23bcba22b",
		"tokenizer.json":         "122d22ca558413499eac24a0a4373c6ac76528aa97bd1f1a6a889214df0b254b",
		"tokenizer_config.json":  "2cdce507e443629890f90309e771124fa329b4f54e027f38f227e396631f9630",
		"LICENSE":                "e87b912002f04cdfa837eaf7f70548ab79b9cb62a285495edf575f3da875aec4",
	}
	for name, sum := range want {
		t.Run(name, func(t *testing.T) {
			b, err := fs.ReadFile(FS(), name)
			require.NoError(t, err)
			h := sha256.Sum256(b)
			require.Equal(t, sum, hex.EncodeToString(h[:]))
		})
	}
}
