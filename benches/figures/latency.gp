# Ping round trip through the device under test: median and p99 per
# configuration, idle and under a background load (log y axis).
# Data (fig-latency.csv): case,median_us,p99_us
# Usage: gnuplot -e "data='fig-latency.csv'; out='latency.svg'" latency.gp
set terminal svg size 720,420 dynamic enhanced font 'sans,11' background rgb 'white'
set encoding utf8
set output out
set datafile separator ','
# The first line is the header; titles are given below.
set key autotitle columnhead
set datafile missing 'NaN'
set title 'Ping round trip through the device under test (log scale)'
set xlabel 'configuration and background load'
set ylabel 'round trip (µs)'
set logscale y
set format y '%.0f'
set grid ytics
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border rgb 'black'
set boxwidth 0.9
set xtics noenhanced rotate by -25 nomirror
set key inside top left vertical noenhanced box opaque
set offsets 0, 0, graph 0.25, 0
# Clusters sit at x = 0 .. rows-1; trim the empty margins beside them.
stats data using 2 nooutput
set xrange [-0.6:STATS_records - 0.4]
plot data using 2:xtic(1) title 'median' lc rgb '#1f77b4', \
     '' using 3 title '99th percentile' lc rgb '#ff7f0e'
