# Conntrack hit latency against the table's size: hot (1,024-connection
# working set) and cold (uniform over all entries), one and two threads,
# with the 50 ns target.
# Data (fig-conntrack-hit.csv): entries,hot_1_thread,hot_2_threads,cold_1_thread,cold_2_threads
# Usage: gnuplot -e "data='fig-conntrack-hit.csv'; out='conntrack-hit.svg'" conntrack-hit.gp
set terminal svg size 720,420 dynamic enhanced font 'sans,11' background rgb 'white'
set encoding utf8
set output out
set datafile separator ','
# The first line is the header; titles are given below.
set key autotitle columnhead
set title 'Conntrack: median time of a hit vs entries in the table'
set xlabel 'entries in the table (log scale)'
set ylabel 'time per hit (ns)'
set logscale x
set xtics ('10K' 1e4, '100K' 1e5, '1M' 1e6, '10M' 1e7)
set yrange [0:*]
set grid
set key inside top left vertical noenhanced box opaque
set offsets graph 0.05, graph 0.05, graph 0.1, 0
plot data using 1:2 with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'hot, 1 thread', \
     '' using 1:3 with linespoints lw 2 pt 5 lc rgb '#2ca02c' title 'hot, 2 threads', \
     '' using 1:4 with linespoints lw 2 pt 7 dt 2 lc rgb '#d62728' title 'cold, 1 thread', \
     '' using 1:5 with linespoints lw 2 pt 5 dt 2 lc rgb '#ff7f0e' title 'cold, 2 threads', \
     50 with lines dt 3 lw 1.5 lc rgb 'black' title 'target ≤ 50 ns'
