package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/deepseek-go/deepseek-go/tokenizer"
)

const tokenizeUsage = "deepseek-run tokenize -m DIR [--jsonl] [--special] < input"

// runTokenize implements `deepseek-run tokenize -m DIR [--jsonl] [--special]`.
// Plain mode encodes stdin as it is read and prints a JSON array of ids; --jsonl
// reads {"text": ...} lines and writes one {"ids": [...]} line per input
// line, loading the tokenizer once. It returns the process exit code:
// 0 success, 1 runtime failure, 2 usage error.
func runTokenize(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tokenize", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // we print a one-line reason ourselves
	dir := fs.String("m", "", "checkpoint directory holding tokenizer.json")
	jsonl := fs.Bool("jsonl", false, `read {"text": ...} lines, write {"ids": [...]} lines`)
	special := fs.Bool("special", false, "add the checkpoint's default special tokens (BOS)")
	usage := func(reason string) int {
		fmt.Fprintf(stderr, "deepseek-run tokenize: %s (usage: %s)\n", reason, tokenizeUsage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: %s\n", tokenizeUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		return usage(err.Error())
	}
	if fs.NArg() > 0 {
		return usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if *dir == "" {
		return usage("-m DIR is required")
	}
	tok, err := tokenizer.Load(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "deepseek-run tokenize: %v\n", err)
		return 1
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	if !*jsonl {
		// Stream: ids are written as they are encoded, so the input need
		// not fit in memory (on an error stdout holds a partial array).
		w.WriteByte('[')
		first := true
		err := tok.EncodeReader(ctx, stdin, *special, func(ids []int) error {
			for _, id := range ids {
				if !first {
					w.WriteString(", ")
				}
				first = false
				w.WriteString(strconv.Itoa(id))
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(stderr, "deepseek-run tokenize: %v\n", err)
			return 1
		}
		w.WriteString("]\n")
		if err := w.Flush(); err != nil {
			fmt.Fprintf(stderr, "deepseek-run tokenize: writing: %v\n", err)
			return 1
		}
		return 0
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for line := 1; sc.Scan(); line++ {
		raw := strings.TrimSpace(sc.Text())
		if raw == "" {
			continue
		}
		var in struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal([]byte(raw), &in); err != nil || in.Text == nil {
			reason := `missing "text"`
			if err != nil {
				reason = err.Error()
			}
			fmt.Fprintf(stderr, "deepseek-run tokenize: stdin line %d: %s\n", line, reason)
			return 1
		}
		ids, err := tok.Encode(*in.Text, *special)
		if err != nil {
			fmt.Fprintf(stderr, "deepseek-run tokenize: stdin line %d: %v\n", line, err)
			return 1
		}
		w.WriteString(`{"ids": `)
		if err := writeIDs(w, ids); err != nil {
			fmt.Fprintf(stderr, "deepseek-run tokenize: %v\n", err)
			return 1
		}
		w.WriteString("}\n")
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "deepseek-run tokenize: reading stdin: %v\n", err)
		return 1
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "deepseek-run tokenize: writing: %v\n", err)
		return 1
	}
	return 0
}

// writeIDs writes ids as a compact JSON array.
func writeIDs(w *bufio.Writer, ids []int) error {
	w.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			w.WriteString(", ")
		}
		fmt.Fprint(w, id)
	}
	_, err := w.WriteString("]")
	return err
}
