package serving

import (
	"fmt"
	"io"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePlot draws a sweep as a PNG: P50 and P99 of TTFT, TPOT and E2EL
// (top row) and requests/s, output tok/s and total tok/s (bottom row)
// against the request rate. Rates are evenly spaced categories, so "inf"
// sits after the largest finite rate.
func WritePlot(w io.Writer, runs []*Result, title string) error {
	if len(runs) == 0 {
		return fmt.Errorf("plot: no runs")
	}
	ticks := make([]plot.Tick, len(runs))
	for i, r := range runs {
		ticks[i] = plot.Tick{Value: float64(i), Label: FormatRate(float64(r.RequestRate))}
	}
	series := func(f func(*Result) float64) plotter.XYs {
		xy := make(plotter.XYs, len(runs))
		for i, r := range runs {
			xy[i].X, xy[i].Y = float64(i), f(r)
		}
		return xy
	}
	panel := func(name, unit string, lines ...any) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = name
		p.X.Label.Text = "request rate (req/s)"
		p.Y.Label.Text = unit
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.X.Min, p.X.Max = -0.3, float64(len(runs)-1)+0.3
		p.Y.Min = 0
		p.Legend.Top, p.Legend.Left = true, true // the curves rise to the right
		if err := plotutil.AddLinePoints(p, lines...); err != nil {
			return nil, fmt.Errorf("plot %s: %w", name, err)
		}
		return p, nil
	}
	lat := func(name string, s func(*Result) Stats) (*plot.Plot, error) {
		return panel(name, "ms",
			"P50", series(func(r *Result) float64 { return s(r).Median }),
			"P99", series(func(r *Result) float64 { return s(r).P99 }))
	}
	var grid [2][3]*plot.Plot
	var err error
	specs := []struct {
		row, col int
		make     func() (*plot.Plot, error)
	}{
		{0, 0, func() (*plot.Plot, error) { return lat("TTFT", func(r *Result) Stats { return r.TTFT }) }},
		{0, 1, func() (*plot.Plot, error) { return lat("TPOT", func(r *Result) Stats { return r.TPOT }) }},
		{0, 2, func() (*plot.Plot, error) { return lat("E2E latency", func(r *Result) Stats { return r.E2EL }) }},
		{1, 0, func() (*plot.Plot, error) {
			return panel("Requests", "req/s", "completed", series(func(r *Result) float64 { return r.RequestThroughput }))
		}},
		{1, 1, func() (*plot.Plot, error) {
			return panel("Output tokens", "tok/s", "output", series(func(r *Result) float64 { return r.OutputThroughput }))
		}},
		{1, 2, func() (*plot.Plot, error) {
			return panel("All tokens", "tok/s", "input+output", series(func(r *Result) float64 { return r.TotalThroughput }))
		}},
	}
	for _, s := range specs {
		if grid[s.row][s.col], err = s.make(); err != nil {
			return err
		}
	}
	if title != "" {
		grid[0][1].Title.Text = title + "\n" + grid[0][1].Title.Text
	}
	img := vgimg.New(vg.Points(1200), vg.Points(700))
	dc := draw.New(img)
	t := draw.Tiles{Rows: 2, Cols: 3, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	plots := [][]*plot.Plot{grid[0][:], grid[1][:]}
	canvases := plot.Align(plots, t, dc)
	for r := range plots {
		for c := range plots[r] {
			plots[r][c].Draw(canvases[r][c])
		}
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("plot: writing png: %w", err)
	}
	return nil
}

// WritePlotFile is WritePlot to a new file at path.
func WritePlotFile(path string, runs []*Result, title string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("plot: %s: %w", path, cerr)
		}
	}()
	if err := WritePlot(f, runs, title); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
