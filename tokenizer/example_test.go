package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/deepseek-go/deepseek-go/tokenizer"
)

func Example() {
	tok, err := tokenizer.Load("../testdata/tokenizers/deepseek-v3")
	if err != nil {
		log.Fatal(err)
	}
	ids, err := tok.Encode("Hello world", true) // adds BOS, as transformers does
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ids)
	fmt.Println(tok.Decode(ids[1:]))
	// Output:
	// [0 19923 2058]
	// Hello world
}

func ExampleTokenizer_ApplyChatTemplate() {
	tok, err := tokenizer.Load("../testdata/tokenizers/deepseek-v3")
	if err != nil {
		log.Fatal(err)
	}
	prompt, err := tok.ApplyChatTemplate([]tokenizer.Message{
		{Role: "system", Content: "Be terse."},
		{Role: "user", Content: "2+2?"},
	}, true)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(prompt)
	ids, _ := tok.Encode(prompt, false) // the template already wrote the BOS
	fmt.Println(len(ids), tokenizer.OpensThinkBlock(prompt))
	// Output:
	// <｜begin▁of▁sentence｜>Be terse.<｜User｜>2+2?<｜Assistant｜>
	// 11 false
}

func ExampleTokenizer_NewStreamDecoder() {
	tok, err := tokenizer.Load("../testdata/tokenizers/deepseek-v3")
	if err != nil {
		log.Fatal(err)
	}
	ids, _ := tok.Encode("🦙 ok", false) // the emoji spans three byte-level tokens
	d := tok.NewStreamDecoder()
	for _, id := range ids {
		fmt.Printf("%q ", d.Next(id))
	}
	fmt.Printf("%q\n", d.Flush())
	// Output:
	// "" "" "🦙" " ok" ""
}
