#!/usr/bin/env python3
"""Converts a ClassBench filter file into the testbed benchmark's three rule
sets carrying the same policy: microseg's rules YAML, an nftables linear
chain, and an nftables verdict-map version.

Policy: every ClassBench rule becomes an `allow` rule, in file order,
except the file's last rule, the catch-all (any, any, any), which is
replaced by a rule allowing the benchmark traffic (UDP from SRC_NET to
DST_NET), so the rule count is the file's;
the default is deny. The traffic is checked to match *no* ClassBench rule,
so every new flow walks the whole list before it is admitted: the worst
case for a linear classifier, and each implementation does the same work
for the same verdict. (With allow everywhere, rule order and overlaps
cannot change a verdict, which is what lets the verdict-map version, whose
lookup has no priorities, carry the same policy.)

ClassBench acl1 rules have wildcard source ports (checked here), and
protocols tcp, udp, icmp or any (icmp/any with full port ranges), so the
conversion into microseg's (from, to, proto/dport-range) rules is exact.

nftables: connection tracking is on, as in microseg. A flow's first packet
walks the rules; an admitting rule sets the conntrack mark, and later
packets are accepted by the first rule `ct mark 1 accept`. (The usual
`ct state established` does not cover one-way UDP, which conntrack keeps in
state NEW until a reply is seen; microseg admits the flow's later packets
from its conntrack entry, so the mark is the equivalent.)

Usage: classbench_rules.py FILE OUTDIR SRC_NET DST_NET SPORT_LO SPORT_HI DPORT_LO DPORT_HI
"""
import ipaddress
import sys


def parse(path):
    rules = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            fields = line.lstrip("@").split("\t")
            src = ipaddress.ip_network(fields[0], strict=False)
            dst = ipaddress.ip_network(fields[1], strict=False)
            sp = [int(x) for x in fields[2].split(":")]
            dp = [int(x) for x in fields[3].split(":")]
            value, mask = (int(x, 16) for x in fields[4].split("/"))
            proto = value if mask == 0xFF else None
            if sp != [0, 65535]:
                sys.exit(f"{path}:{n}: source port range {sp} cannot be expressed")
            if proto not in (6, 17) and dp != [0, 65535]:
                sys.exit(f"{path}:{n}: port range on protocol {proto}")
            if proto not in (None, 1, 6, 17):
                sys.exit(f"{path}:{n}: protocol {proto} not handled")
            rules.append((src, dst, proto, dp[0], dp[1]))
    return rules


def matches(rule, src, dst, proto, sport_range, dport_range):
    """Whether any packet of the traffic could match the rule."""
    rsrc, rdst, rproto, lo, hi = rule
    if not (src.overlaps(rsrc) and dst.overlaps(rdst)):
        return False
    if rproto is not None and rproto != proto:
        return False
    if rproto in (6, 17) and (hi < dport_range[0] or lo > dport_range[1]):
        return False
    return True


PROTO = {1: "icmp", 6: "tcp", 17: "udp"}


def service(rule):
    _, _, proto, lo, hi = rule
    if proto is None:
        return "any"
    if proto == 1 or (lo, hi) == (0, 65535):
        return PROTO[proto]
    return f"{PROTO[proto]}/{lo}" if lo == hi else f"{PROTO[proto]}/{lo}-{hi}"


def nft_match(rule):
    src, dst, proto, lo, hi = rule
    parts = []
    if src.prefixlen:
        parts.append(f"ip saddr {src}")
    if dst.prefixlen:
        parts.append(f"ip daddr {dst}")
    if proto is not None:
        if proto in (6, 17) and (lo, hi) != (0, 65535):
            port = str(lo) if lo == hi else f"{lo}-{hi}"
            parts.append(f"{PROTO[proto]} dport {port}")
        else:
            parts.append(f"ip protocol {PROTO[proto]}")
    return " ".join(parts)


def overlap(a, b):
    return all(a[k] <= b[k + 1] and b[k] <= a[k + 1] for k in range(0, len(a), 2))


def contains(a, b):
    return all(a[k] <= b[k] and b[k + 1] <= a[k + 1] for k in range(0, len(a), 2))


def place(elems):
    """Drops elements contained in an earlier-kept one (or duplicates) and
    spreads the rest over layers without overlaps inside a layer."""
    # Widest first, so that contained elements find their container.
    order = sorted(elems, key=lambda e: [e[0][k] - e[0][k + 1] for k in range(0, len(e[0]), 2)])
    layers = []
    for box, elem in order:
        target = None
        covered = False
        for layer in layers:
            clash = False
            for other, _ in layer:
                if overlap(box, other):
                    if contains(other, box):
                        covered = True
                        break
                    clash = True
            if covered:
                break
            if not clash and target is None:
                target = layer
        if covered:
            continue
        if target is None:
            target = []
            layers.append(target)
        target.append((box, elem))
    return [[elem for _, elem in layer] for layer in layers]


PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}


def element(e):
    parts = [str(e[0]), str(e[1])]
    if len(e) > 2:
        parts.append(PROTO_NAMES[e[2]])
    if len(e) > 3:
        parts.append(str(e[3]) if e[3] == e[4] else f"{e[3]}-{e[4]}")
    return " . ".join(parts)


def main():
    path, out = sys.argv[1], sys.argv[2]
    src = ipaddress.ip_network(sys.argv[3])
    dst = ipaddress.ip_network(sys.argv[4])
    sport = (int(sys.argv[5]), int(sys.argv[6]))
    dport = (int(sys.argv[7]), int(sys.argv[8]))
    rules = parse(path) if path != "-" else []
    # The sets end with the catch-all rule (any, any, any protocol): it is
    # the set's default, replaced by the benchmark traffic's own rule, so
    # the rule count stays that of the file.
    if rules and rules[-1] == (
        ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("0.0.0.0/0"), None, 0, 65535
    ):
        rules.pop()
    hits = [i for i, r in enumerate(rules) if matches(r, src, dst, 17, sport, dport)]
    if hits:
        sys.exit(f"benchmark traffic would match rule(s) {hits[:5]}: pick other addresses")
    bench = (src, dst, 17, 0, 65535)

    with open(f"{out}/rules.yaml", "w") as f:
        f.write(f"# {len(rules)} ClassBench rules from {path} (all allow), then the\n")
        f.write("# benchmark traffic's rule; generated by benches/testbed/classbench_rules.py\n")
        f.write("default_action: deny\nrules:\n")
        for i, r in enumerate(rules + [bench]):
            name = f"cb{i}" if i < len(rules) else "bench-traffic"
            f.write(
                f"  - {{name: {name}, from: \"{r[0]}\", to: \"{r[1]}\", "
                f"services: [\"{service(r)}\"], action: allow}}\n"
            )

    head = (
        "table ip mbench {\n"
        "  chain admit {\n    ct mark set 1 accept\n  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy drop;\n"
        "    ct mark 1 accept\n"
    )
    with open(f"{out}/linear.nft", "w") as f:
        f.write(head)
        for r in rules + [bench]:
            f.write(f"    {nft_match(r)} goto admit\n")
        f.write("  }\n}\n")

    # Verdict maps, one per match shape (addresses + protocol + port
    # range; addresses + protocol; addresses), every element's verdict
    # `goto admit`. nftables' interval maps on concatenations (pipapo)
    # refuse overlapping elements, and ClassBench rules overlap: elements
    # contained in another of the same shape are dropped (same verdict),
    # and the rest are spread greedily over as few maps ("layers") per
    # shape as keep each map free of overlaps, looked up one after another.
    shapes = {"l4": [], "l3": [], "any": []}
    for s, d, proto, lo, hi in rules:
        box = [int(s[0]), int(s[-1]), int(d[0]), int(d[-1])]
        if proto in (6, 17) and (lo, hi) != (0, 65535):
            shapes["l4"].append((box + [proto, proto, lo, hi], (s, d, proto, lo, hi)))
        elif proto is not None:
            shapes["l3"].append((box + [proto, proto], (s, d, proto)))
        else:
            shapes["any"].append((box, (s, d)))
    layers = {name: place(elems) for name, elems in shapes.items()}
    kinds = {
        "l4": ("ipv4_addr . ipv4_addr . inet_proto . inet_service",
               "ip saddr . ip daddr . meta l4proto . th dport"),
        "l3": ("ipv4_addr . ipv4_addr . inet_proto", "ip saddr . ip daddr . meta l4proto"),
        "any": ("ipv4_addr . ipv4_addr", "ip saddr . ip daddr"),
    }
    with open(f"{out}/vmap.nft", "w") as f:
        f.write(head)
        for name, maps in layers.items():
            for i, _ in enumerate(maps):
                f.write(f"    {kinds[name][1]} vmap @{name}_{i}\n")
        f.write(f"    {nft_match(bench)} goto admit\n  }}\n")
        for name, maps in layers.items():
            for i, _ in enumerate(maps):
                f.write(f"  map {name}_{i} {{\n    type {kinds[name][0]} : verdict\n")
                f.write("    flags interval\n  }\n")
        f.write("}\n")
    # Elements go in separate files of at most 500 (one nft -f each: a very
    # large batch fails with ENOBUFS).
    chunk = 0
    for name, maps in layers.items():
        for i, elems in enumerate(maps):
            for at in range(0, len(elems), 500):
                with open(f"{out}/vmap-elements-{chunk:03}.nft", "w") as f:
                    f.write(f"add element ip mbench {name}_{i} {{\n")
                    f.write(",\n".join(f"  {element(e)} : goto admit" for e in elems[at:at + 500]))
                    f.write("\n}\n")
                chunk += 1
    summary = ", ".join(
        f"{name}: {sum(len(m) for m in maps)} elements in {len(maps)} map(s)"
        for name, maps in layers.items()
    )
    print(f"{len(rules) + 1} rules; verdict maps: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
