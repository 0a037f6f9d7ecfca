package serve

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine"
)

func TestDecodeChatRequest(t *testing.T) {
	var r ChatRequest
	require.NoError(t, decodeJSON([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
		"stop":"x","max_completion_tokens":7,"temperature":0.5,"top_k":-1,"seed":-3,"n":2,"stream":true,"stream_options":{"include_usage":true},
		"logprobs":true,"top_logprobs":3,"some_extension":{"ignored":true}}`), &r))
	require.NoError(t, r.validate())
	assert.Equal(t, ContentText("ab"), r.Messages[0].Content)
	s, err := r.Params.validate(engine.Request{})
	require.NoError(t, err)
	assert.Equal(t, 7, s.maxTokens)
	assert.Equal(t, []string{"x"}, s.stops)
	assert.Equal(t, 2, s.n)
	assert.Equal(t, float32(0.5), s.req.Sampling.Temperature)
	assert.Equal(t, 0, s.req.Sampling.TopK)
	assert.Equal(t, uint64(1<<64-3), s.req.Sampling.Seed)
	assert.True(t, s.seeded)
}

func TestDecodeCompletionPrompts(t *testing.T) {
	for _, tc := range []struct {
		body string
		want PromptList
	}{
		{`"hi"`, PromptList{{Text: "hi"}}},
		{`["a","b"]`, PromptList{{Text: "a"}, {Text: "b"}}},
		{`[1,2,3]`, PromptList{{IDs: []int{1, 2, 3}}}},
		{`[[1],[2,3]]`, PromptList{{IDs: []int{1}}, {IDs: []int{2, 3}}}},
	} {
		var r CompletionRequest
		require.NoError(t, decodeJSON([]byte(`{"model":"m","prompt":`+tc.body+`}`), &r), tc.body)
		assert.Equal(t, tc.want, r.Prompt, tc.body)
	}
}

// Every bad request is an *apiError with status 400 whose message names
// what is wrong.
func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name, body, param, msg string
	}{
		{"empty body", ``, "", "empty"},
		{"not an object", `[1]`, "", "JSON object"},
		{"malformed", `{"model":`, "", "malformed JSON"},
		{"trailing garbage", `{"model":"m"} x`, "", "malformed JSON"},
		{"wrong type", `{"model":"m","messages":[],"temperature":"hot"}`, "temperature", "expected a number, got string"},
		{"wrong type int", `{"model":"m","max_tokens":1.5}`, "max_tokens", "expected an integer"},
		{"huge int", `{"model":"m","max_tokens":1e40}`, "max_tokens", "expected an integer"},
		{"stop type", `{"model":"m","stop":5}`, "", "list of strings"},
		{"no model", `{"messages":[{"role":"user","content":"x"}]}`, "model", "model is required"},
		{"no messages", `{"model":"m"}`, "messages", "at least one"},
		{"bad role", `{"model":"m","messages":[{"role":"robot","content":"x"}]}`, "messages[0].role", "robot"},
		{"image part", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "", "only text parts"},
		{"negative max_tokens", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}`, "max_tokens", "at least 1, got -1"},
		{"zero max_completion_tokens", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":0}`, "max_completion_tokens", "at least 1"},
		{"temperature", `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}`, "temperature", "between 0 and 2, got 3"},
		{"top_p zero", `{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0}`, "top_p", "(0, 1]"},
		{"top_p", `{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1.5}`, "top_p", "between 0 and 1"},
		{"top_k", `{"model":"m","messages":[{"role":"user","content":"x"}],"top_k":-2}`, "top_k", "-2"},
		{"min_p", `{"model":"m","messages":[{"role":"user","content":"x"}],"min_p":-0.1}`, "min_p", "between 0 and 1"},
		{"repetition_penalty", `{"model":"m","messages":[{"role":"user","content":"x"}],"repetition_penalty":0}`, "repetition_penalty", "> 0"},
		{"frequency_penalty", `{"model":"m","messages":[{"role":"user","content":"x"}],"frequency_penalty":2.5}`, "frequency_penalty", "between -2 and 2"},
		{"presence_penalty", `{"model":"m","messages":[{"role":"user","content":"x"}],"presence_penalty":-3}`, "presence_penalty", "between -2 and 2"},
		{"n", `{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}`, "n", "between 1 and 16"},
		{"too many stops", `{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]}`, "stop", "at most 16"},
		{"empty stop", `{"model":"m","messages":[{"role":"user","content":"x"}],"stop":[""]}`, "stop", "stop[0]"},
		{"top_logprobs without logprobs", `{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2}`, "top_logprobs", "needs logprobs"},
		{"top_logprobs range", `{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}`, "top_logprobs", "between 0 and 20"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkChatBody([]byte(tc.body))
			require.Error(t, err)
			var ae *apiError
			require.True(t, errors.As(err, &ae), "%T", err)
			assert.Equal(t, 400, ae.Status)
			assert.Equal(t, "invalid_request_error", ae.Type)
			assert.Equal(t, tc.param, ae.Param)
			assert.Contains(t, ae.Message, tc.msg)
		})
	}
}

// checkChatBody is the chat handler's decoding and validation without a
// model.
func checkChatBody(body []byte) error {
	var r ChatRequest
	return checkBody(body, &r, &r.Params)
}

func checkCompletionBody(body []byte) error {
	var r CompletionRequest
	return checkBody(body, &r, &r.Params)
}

// checkBody decodes body into r, whose shared fields are p, and validates
// both as the handlers do.
func checkBody(body []byte, r interface{ validate() error }, p *Params) error {
	if err := decodeJSON(body, r); err != nil {
		return err
	}
	if _, err := p.validate(engine.Request{}); err != nil {
		return err
	}
	return r.validate()
}

// FuzzDecodeRequest: no body panics the decoder or the validation, and
// every rejection is a 400 in OpenAI's shape.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stop":["a","b"],"logprobs":true,"top_logprobs":2}`,
		`{"model":"m","prompt":[[1,2],[3]],"logprobs":3,"n":2,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"temperature":1e309}`,
		`{"model":"m","prompt":"x","seed":-1,"top_k":-1,"top_p":0.9,"min_p":0.1,"repetition_penalty":1.1}`,
		`{"messages":null,"prompt":null,"stop":null}`, `[]`, `"x"`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, check := range []func([]byte) error{checkChatBody, checkCompletionBody} {
			err := check(body)
			if err == nil {
				continue
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status != 400 || ae.Message == "" {
				t.Fatalf("body %q: want a 400 apiError, got %#v", body, err)
			}
		}
	})
}
