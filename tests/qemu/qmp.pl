#!/usr/bin/perl
# SPDX-License-Identifier: MIT
#
# tests/qemu/qmp.pl - a small QMP client for the QEMU tests and bench.
#
#   qmp.pl [--timeout S] SOCKET JSON...
#       run each command (qmp_capabilities is sent first); print each
#       "return" value as one line of JSON; on a QMP error print
#       "qmp: COMMAND: DESC" on stderr and exit 1
#   qmp.pl --wait-migrate S SOCKET
#       poll query-migrate every 20 ms until completed (exit 0) or
#       failed/cancelled (exit 1), at most S seconds (exit 124); print the
#       last query-migrate reply
#   qmp.pl --wait-socket S SOCKET
#       wait until SOCKET accepts connections (exit 0) or S seconds pass (1)
use strict;
use warnings;
use IO::Socket::UNIX;
use JSON::PP;
use Time::HiRes qw(sleep time);

my $timeout = 30;
my $mode = 'run';
my $limit;
while (@ARGV && $ARGV[0] =~ /^--/) {
	my $o = shift @ARGV;
	if ($o eq '--timeout') { $timeout = shift @ARGV; }
	elsif ($o eq '--wait-migrate') { $mode = 'wait'; $limit = shift @ARGV; }
	elsif ($o eq '--wait-socket') { $mode = 'socket'; $limit = shift @ARGV; }
	else { die "qmp: unknown option $o\n"; }
}
my $path = shift @ARGV or die "usage: qmp.pl [--timeout S] SOCKET JSON...\n";

if ($mode eq 'socket') {
	my $end = time + $limit;
	while (time < $end) {
		my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path);
		if ($s) { close $s; exit 0; }
		sleep 0.05;
	}
	exit 1;
}

my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path)
	or die "qmp: cannot connect to $path: $!\n";
my $json = JSON::PP->new->canonical;
my $buf = '';

sub msg {
	my $end = time + $timeout;
	for (;;) {
		if ($buf =~ s/^([^\n]*)\n//) {
			my $line = $1;
			next if $line =~ /^\s*$/;
			return $json->decode($line);
		}
		my $left = $end - time;
		die "qmp: $path: no answer within $timeout s\n" if $left <= 0;
		my $rin = '';
		vec($rin, fileno($sock), 1) = 1;
		next unless select($rin, undef, undef, $left);
		my $n = sysread($sock, $buf, 65536, length $buf);
		die "qmp: $path: QEMU closed the QMP socket\n" unless $n;
	}
}

sub cmd {
	my ($text) = @_;
	my $c = $json->decode($text);
	syswrite($sock, $json->encode($c) . "\n");
	for (;;) {
		my $m = msg();
		next if exists $m->{event};
		if (exists $m->{error}) {
			print STDERR "qmp: $c->{execute}: $m->{error}{desc}\n";
			exit 1;
		}
		return $m->{return} if exists $m->{return};
	}
}

msg();	# greeting
cmd('{"execute":"qmp_capabilities"}');
if ($mode eq 'wait') {
	my $end = time + $limit;
	for (;;) {
		my $r = cmd('{"execute":"query-migrate"}');
		my $st = $r->{status} // '';
		if ($st eq 'completed') { print $json->encode($r), "\n"; exit 0; }
		if ($st eq 'failed' || $st eq 'cancelled') {
			print $json->encode($r), "\n";
			exit 1;
		}
		if (time > $end) { print $json->encode($r), "\n"; exit 124; }
		sleep 0.02;
	}
}
for my $t (@ARGV) {
	my $r = cmd($t);
	print ref $r ? $json->encode($r) : $r, "\n";
}
