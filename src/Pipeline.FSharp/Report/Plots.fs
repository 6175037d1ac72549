/// Figures of a report: static PNGs with ScottPlot 5 (headless, SkiaSharp) and interactive charts with
/// Plotly.NET (HTML, self-contained: plotly.js is embedded in the page, so it works offline).
module MetaGenRL.Pipeline.Plots

open System
open ScottPlot
open Plotly.NET
open SkiaSharp
open MetaGenRL.Pipeline.ReportData

/// What the shaded band means, written on every figure.
let bandNote (curves: Curve[]) =
    match curves |> Array.map (fun c -> c.Runs) |> Array.distinct with
    | [| n |] -> sprintf "shaded: ± 1 std across runs (n = %d)" n
    | _ -> "shaded: ± 1 std across runs (n per method in the legend)"

/// Grid points from the first one where the curve has a value (nothing is drawn before a run's first episode).
let private visible (c: Curve) =
    match c.Mean |> Array.tryFindIndex (Double.IsNaN >> not) with
    | Some i -> Some(c.X.[i..], c.Mean.[i..], c.Std.[i..])
    | None -> None

// ── SCOTTPLOT (PNG) ──

/// One figure: a mean line per curve with a ± 1 std band, the title, axis labels and the band note.
let private scottPlot (title: string) (yLabel: string) (curves: Curve[]) =
    let plt = new Plot()
    let palette = Palettes.Category10()
    curves |> Array.iteri (fun i c ->
        match visible c with
        | None -> ()
        | Some(xs, m, s) ->
            let color = palette.GetColor i
            let band = plt.Add.FillY(xs, Array.map2 (-) m s, Array.map2 (+) m s)
            band.FillColor <- color.WithAlpha 0.2
            band.LineWidth <- 0.0f
            let line = plt.Add.ScatterLine(xs, m, Nullable color)
            line.LineWidth <- 2.0f
            line.LegendText <- c.Label)
    plt.Title(title)
    plt.XLabel("env steps")
    plt.YLabel(yLabel)
    let note = plt.Add.Annotation(bandNote curves, Alignment.LowerRight)
    note.LabelBackgroundColor <- Colors.White.WithAlpha 0.85
    note.LabelFontSize <- 12.0f
    plt.ShowLegend(Alignment.UpperLeft) |> ignore
    plt

/// PNG bytes of one figure of learning curves.
let curvesPng (title: string) (yLabel: string) (curves: Curve[]) =
    use plt = scottPlot title yLabel curves
    plt.GetImageBytes(900, 560, ImageFormat.Png)

/// Several figures stacked vertically into one PNG (drawn with SkiaSharp).
let stackedPng (panels: (string * string * Curve[]) list) =
    let w, h = 900, 420
    let info = SKImageInfo(w, h * panels.Length)
    use surface = SKSurface.Create info
    surface.Canvas.Clear SKColors.White
    panels |> List.iteri (fun i (title, yLabel, curves) ->
        use plt = scottPlot title yLabel curves
        use bmp = SKBitmap.Decode(plt.GetImageBytes(w, h, ImageFormat.Png))
        surface.Canvas.DrawBitmap(bmp, 0.0f, float32 (i * h)))
    use image = surface.Snapshot()
    use data = image.Encode(SKEncodedImageFormat.Png, 100)
    data.ToArray()

// ── PLOTLY.NET (HTML) ──

/// One interactive chart: per curve a band (upper/lower) and the mean line, with the band note as subtitle.
let curvesChart (title: string) (yLabel: string) (curves: Curve[]) =
    curves
    |> Array.choose (fun c ->
        visible c |> Option.map (fun (xs, m, s) ->
            Chart.Range(xs, m, Array.map2 (+) m s, Array.map2 (-) m s, StyleParam.Mode.Lines, Name = c.Label)))
    |> Chart.combine
    |> Chart.withTitle (sprintf "%s<br><sub>%s</sub>" title (bandNote curves))
    |> Chart.withXAxisStyle "env steps"
    |> Chart.withYAxisStyle yLabel

/// One HTML page holding every chart, in order, under a heading.
let htmlPage (heading: string) (charts: GenericChart list) =
    // toEmbeddedHTML is a complete page for one chart; with PlotlyJSReference.Full its <head> holds the whole
    // plotly.js that Plotly.NET ships inside its assembly, so the page works offline (≈ 3.6 MB). That <head> is
    // reused and every chart's own <div> + <script> goes in the body.
    let offline = DisplayOptions.init (PlotlyJSReference = PlotlyJSReference.Full)
    let page = GenericChart.toEmbeddedHTML (Chart.Line([ 0.0 ], [ 0.0 ]) |> Chart.withDisplayOptions offline)
    let head = page.Substring(0, page.IndexOf("<body>", StringComparison.Ordinal))
    let body = charts |> List.map GenericChart.toChartHTML |> String.concat "\n"
    sprintf "%s<body>\n<h1>%s</h1>\n%s\n</body>\n</html>\n" head (Net.WebUtility.HtmlEncode heading) body
