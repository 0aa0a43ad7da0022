# Classifier lookup time per ClassBench set: compiled classifier (single
# key, batched) against the linear reference, log y axis.
# Data (fig-classifier-lookup.csv): set,single_ns,batched_ns,linear_ns
# Usage: gnuplot -e "data='fig-classifier-lookup.csv'; out='classifier-lookup.svg'" classifier-lookup.gp
set terminal svg size 720,420 dynamic enhanced font 'sans,11' background rgb 'white'
set encoding utf8
set output out
set datafile separator ','
# The first line is the header; titles are given below.
set key autotitle columnhead
set title 'Classifier: time per lookup, by rule set (log scale)'
set xlabel 'ClassBench rule set'
set ylabel 'time per lookup (ns)'
set logscale y
set yrange [10:*]
set offsets 0, 0, graph 0.2, 0
set format y '10^{%L}'
set grid ytics
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border rgb 'black'
set boxwidth 0.9
set xtics noenhanced rotate by -30 nomirror
set key inside top left vertical noenhanced box opaque
# Clusters sit at x = 0 .. rows-1; trim the empty margin on their left.
stats data using 2 nooutput
set xrange [-0.6:STATS_records - 0.4]
plot data using 2:xtic(1) title 'compiled, single key' lc rgb '#1f77b4', \
     '' using 3 title 'compiled, batched' lc rgb '#2ca02c', \
     '' using 4 title 'linear reference' lc rgb '#d62728'
