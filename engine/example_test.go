package engine_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/third_party/stories260k"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// Generate streams a story from the embedded stories260K demo model.
// Temperature 0 (the zero SamplerOptions) is greedy decoding, so the output
// is deterministic.
func Example() {
	m, err := engine.LoadFS(stories260k.FS(), engine.WithDevice("cpu"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	var story strings.Builder
	for tok, err := range m.Generate(context.Background(), "Once upon a time", engine.GenerateOptions{MaxTokens: 27}) {
		if err != nil {
			log.Fatal(err)
		}
		story.WriteString(tok.Text) // or print it as it arrives
	}
	fmt.Println("Once upon a time" + story.String())
	// Output: Once upon a time, there was a little girl named Lily. She loved to play outside in the park.
}

// Sampling with a seed is reproducible: the same seed gives the same text.
func ExampleSamplerOptions() {
	m, err := engine.LoadFS(stories260k.FS(), engine.WithDevice("cpu"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	story := func(seed uint64) string {
		o := engine.GenerateOptions{
			MaxTokens: 32,
			Sampling:  engine.SamplerOptions{Temperature: 0.8, TopP: 0.9, Seed: seed},
		}
		var sb strings.Builder
		for tok, err := range m.Generate(context.Background(), "Lily", o) {
			if err != nil {
				log.Fatal(err)
			}
			sb.WriteString(tok.Text)
		}
		return sb.String()
	}
	fmt.Println(story(42) == story(42))
	// Output: true
}

// GenerateIDs works on token ids; Stats reports the timings.
func ExampleModel_GenerateIDs() {
	m, err := engine.LoadFS(stories260k.FS(), engine.WithDevice("cpu"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	var st engine.Stats
	var ids []int
	bos, _ := m.Tokenizer().BOS()
	for tok, err := range m.GenerateIDs(context.Background(), []int{bos}, engine.GenerateOptions{MaxTokens: 8, Stats: &st}) {
		if err != nil {
			log.Fatal(err)
		}
		ids = append(ids, tok.ID)
	}
	fmt.Println(ids, st.PromptTokens, st.GeneratedTokens)
	// Output: [403 407 261 378 432 383 286 261] 1 8
}

// A Session gives the logits of every prompt position, then one step at a
// time from its KV cache.
func ExampleModel_NewSession() {
	m, err := engine.LoadFS(stories260k.FS(), engine.WithDevice("cpu"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	s, err := m.NewSession(64)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	ids, err := m.Tokenizer().Encode("Once upon a time", true)
	if err != nil {
		log.Fatal(err)
	}
	logits, err := s.Prefill(ctx, ids)
	if err != nil {
		log.Fatal(err)
	}
	greedy, _ := engine.NewSampler(engine.SamplerOptions{})
	next := greedy.Sample(logits[len(logits)-1], nil)
	step, err := s.Step(ctx, next)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(logits), len(step), m.Tokenizer().Decode([]int{next, greedy.Sample(step, nil)}))
	// Output: 5 512 , there
}

// Chat applies the checkpoint's chat template. DeepSeek-R1 models reply
// with their reasoning in a <think> block first.
func ExampleModel_Chat() {
	m, err := engine.Load("/models/DeepSeek-R1-Distill-Qwen-1.5B") // huggingface-cli download deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	msgs := []tokenizer.Message{
		{Role: "system", Content: "Answer briefly."},
		{Role: "user", Content: "What is the capital of France?"},
	}
	o := engine.GenerateOptions{MaxTokens: 512, Sampling: engine.SamplerOptions{Temperature: 0.6, TopP: 0.95}}
	for tok, err := range m.Chat(context.Background(), msgs, o) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(tok.Text)
	}
}

// A Sampler picks the next token from logits; options are checked first.
func ExampleNewSampler() {
	greedy, err := engine.NewSampler(engine.SamplerOptions{}) // temperature 0
	if err != nil {
		log.Fatal(err)
	}
	logits := []float32{0.1, 2.5, -1, 2.4}
	fmt.Println(greedy.Sample(logits, nil))
	// A repetition penalty of 2 halves token 1's logit because it was seen.
	penalised, _ := engine.NewSampler(engine.SamplerOptions{RepeatPenalty: 2})
	fmt.Println(penalised.Sample(logits, []int{1}))

	_, err = engine.NewSampler(engine.SamplerOptions{Temperature: 0.7, TopP: 2})
	fmt.Println(err)
	// Output:
	// 1
	// 3
	// top-p must be in (0, 1] (0 = off), got 2
}

// A Conversation keeps the KV cache between turns, so each turn only runs
// the new part of the chat through the model.
func ExampleModel_NewConversation() {
	m, err := engine.Load("/models/DeepSeek-R1-Distill-Qwen-1.5B")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	conv, err := m.NewConversation(4096)
	if err != nil {
		log.Fatal(err)
	}
	var msgs []tokenizer.Message
	for _, question := range []string{"Name a prime number.", "And a larger one?"} {
		msgs = append(msgs, tokenizer.Message{Role: "user", Content: question})
		var reply strings.Builder
		for tok, err := range conv.Chat(context.Background(), msgs, engine.GenerateOptions{MaxTokens: 256}) {
			if err != nil {
				log.Fatal(err)
			}
			reply.WriteString(tok.Text)
		}
		fmt.Println(reply.String())
		msgs = append(msgs, tokenizer.Message{Role: "assistant", Content: reply.String()})
	}
}
