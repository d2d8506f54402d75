// Command gitleaks_go times gitleaks' own Go library on the DLP benchmark's inputs, so
// bench_dlp.py can print the egress engine's cost beside it: the same pinned module
// (v8.30.1), its default rules, and the decode depth given.
//
// Usage: gitleaks_go -depth N -rounds R FILE...   (prints one JSON object per file)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/zricethezav/gitleaks/v8/detect"
)

func main() {
	depth := flag.Int("depth", 5, "max decode depth (the CLI's default is 5, the library's 0)")
	rounds := flag.Int("rounds", 20, "scans per file")
	flag.Parse()
	d, err := detect.NewDetectorDefaultConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitleaks_go:", err)
		os.Exit(1)
	}
	d.MaxDecodeDepth = *depth
	for _, name := range flag.Args() {
		data, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gitleaks_go:", err)
			os.Exit(1)
		}
		text := string(data)
		var samples []float64
		findings := 0
		for i := 0; i < *rounds; i++ {
			t0 := time.Now()
			findings = len(d.DetectString(text))
			samples = append(samples, time.Since(t0).Seconds())
		}
		sort.Float64s(samples)
		out, _ := json.Marshal(map[string]any{"file": name, "samples": samples, "findings": findings})
		fmt.Println(string(out))
	}
}
