#!/usr/bin/perl
# SPDX-License-Identifier: MIT
#
# scripts/check-layers.pl (make check-layers): print the include graph and
# the call graph of ktls/, lib/ and tools/, and fail on
#   - a cycle between files (includes: "a.h" includes "b.h" includes "a.h";
#     calls: a.c calls into b.c, which calls into a.c),
#   - an arrow up the layers: ktls/ -> lib/ or tools/, lib/ -> tools/.
# The call graph comes from the objects of a build (nm: a file's undefined
# symbols against the other files' definitions), so build first.
#
#   scripts/check-layers.pl [--build DIR] [--quiet]
use strict;
use warnings;

my ($build, $quiet) = ('build', 0);
while (@ARGV) {
	my $a = shift @ARGV;
	if ($a eq '--build') { $build = shift @ARGV; }
	elsif ($a eq '--quiet') { $quiet = 1; }
	else { die "usage: $0 [--build DIR] [--quiet]\n"; }
}

my @dirs = ('ktls', 'lib', 'tools');
my %rank = (ktls => 0, lib => 1, 'lib/include' => 1, tools => 2);
my @inc_path = ('lib/include', 'lib', 'ktls');
my $bad = 0;

sub folder { my ($f) = @_; $f =~ m{^(.*)/[^/]+$}; return $1; }
sub layer { my $d = folder($_[0]); $d = 'lib' if $d eq 'lib/include'; return $d; }

# ---- include graph -------------------------------------------------------
my (%inc, @files);
for my $d (@dirs, 'lib/include') {
	push @files, sort glob("$d/*.c $d/*.h $d/*.def");
}
for my $f (@files) {
	open(my $fh, '<', $f) or die "$f: $!\n";
	while (<$fh>) {
		next unless /^\s*#\s*include\s+"([^"]+)"/;
		my $name = $1;
		my $to;
		for my $dir (folder($f), @inc_path) {
			if (-f "$dir/$name") { $to = "$dir/$name"; last; }
		}
		next unless defined $to;
		$inc{$f}{$to} = 1 unless $to eq $f;
	}
	close $fh;
}

# ---- call graph (objects) ------------------------------------------------
my (%def, %undef, %call);
for my $d (@dirs) {
	for my $o (sort glob("$build/obj/$d/*.o")) {
		(my $src = $o) =~ s{^\Q$build\E/obj/}{};
		$src =~ s/\.o$/.c/;
		for (`nm -P $o`) {
			my ($sym, $type) = split ' ';
			next unless defined $type;
			if ($type eq 'U') { $undef{$src}{$sym} = 1; }
			elsif ($type =~ /^[TDBRCV]$/) { $def{$sym} = $src; }
		}
	}
}
die "check-layers: no objects under $build/obj: run make first\n" unless %def;
for my $f (keys %undef) {
	for my $s (keys %{$undef{$f}}) {
		my $to = $def{$s};
		next unless defined $to && $to ne $f;
		$call{$f}{$to}{$s} = 1;
	}
}

# ---- cycles: strongly connected components (Tarjan) -----------------------
sub sccs {
	my ($g) = @_;
	my (%index, %low, %on, @stack, @out);
	my $i = 0;
	my $visit;
	$visit = sub {
		my ($v) = @_;
		$index{$v} = $low{$v} = $i++;
		push @stack, $v;
		$on{$v} = 1;
		for my $w (sort keys %{$g->{$v} || {}}) {
			if (!exists $index{$w}) {
				$visit->($w);
				$low{$v} = $low{$w} if $low{$w} < $low{$v};
			} elsif ($on{$w}) {
				$low{$v} = $index{$w} if $index{$w} < $low{$v};
			}
		}
		if ($low{$v} == $index{$v}) {
			my @c;
			my $w;
			do { $w = pop @stack; $on{$w} = 0; push @c, $w; } while ($w ne $v);
			push @out, [sort @c] if @c > 1;
		}
	};
	my %nodes = map { $_ => 1 } keys %$g;
	for my $v (map { keys %$_ } values %$g) { $nodes{$v} = 1; }
	for my $v (sort keys %nodes) { $visit->($v) unless exists $index{$v}; }
	return @out;
}

sub report {
	my ($what, $g, $detail) = @_;
	unless ($quiet) {
		print "$what graph:\n";
		for my $f (sort keys %$g) {
			print "  $f -> ", join(' ', sort keys %{$g->{$f}}), "\n";
		}
	}
	for my $c (sccs($g)) {
		my @why;
		for my $a (@$c) {
			for my $b (@$c) {
				next unless $g->{$a}{$b};
				my $via = $detail ? ' (' . join(', ', (sort keys %{$g->{$a}{$b}})[0 .. 0]) . ')' : '';
				push @why, "$a -> $b$via";
			}
		}
		print "check-layers: $what cycle: ", join('; ', @why), "\n";
		$bad++;
	}
	for my $a (sort keys %$g) {
		for my $b (sort keys %{$g->{$a}}) {
			next unless $rank{layer($b)} > $rank{layer($a)};
			my $via = $detail ? ' (' . join(', ', sort keys %{$g->{$a}{$b}}) . ')' : '';
			print "check-layers: $what arrow up the layers: $a -> $b$via\n";
			$bad++;
		}
	}
}

report('include', \%inc, 0);
report('call', \%call, 1);
print "check-layers: ", $bad ? "$bad problem(s)" : 'no cycle, no arrow up the layers', "\n";
exit($bad ? 1 : 0);
