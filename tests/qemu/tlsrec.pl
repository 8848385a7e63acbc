#!/usr/bin/perl
# SPDX-License-Identifier: MIT
#
# tests/qemu/tlsrec.pl - a TCP relay that counts the TLS records one end
# sends, read off the wire (the tests' own count, not the tool's):
#
#   perl tlsrec.pl HOST:PORT COUNT-FILE
#
# Listens on 127.0.0.1 (any free port, printed as "listening on ADDR"),
# accepts one connection, connects to HOST:PORT and copies bytes both ways
# until both directions ended.  The bytes from the connecting end are
# parsed as TLS records (5-byte header: type, version, length); at the end
# COUNT-FILE gets one line "records N app N handshake N bytes N", where
# app counts type 23 (application data: in TLS 1.3 also the encrypted
# handshake records) and handshake type 22.  A stream that is not TLS
# records ends the count with "bad" (the relay keeps copying).
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;

my ($target, $out) = @ARGV;
die "usage: tlsrec.pl HOST:PORT COUNT-FILE\n" unless defined $out;
$| = 1;
$SIG{PIPE} = "IGNORE";
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
			      Listen => 1, ReuseAddr => 1)
	or die "tlsrec: listen: $!\n";
print "listening on 127.0.0.1:", $l->sockport, "\n";
my $a = $l->accept or die "tlsrec: accept: $!\n";
close $l;
my $b = IO::Socket::INET->new(PeerAddr => $target)
	or die "tlsrec: connect $target: $!\n";

my %count = (records => 0, app => 0, handshake => 0, bytes => 0);
my $pending = '';	# bytes of a record header not yet complete
my $skip = 0;		# record body bytes still to pass
my $bad = 0;

# count(DATA): walk the record headers in what the connecting end sent
sub count {
	my ($d) = @_;
	my $off = 0;
	my $len = length $d;
	$count{bytes} += $len;
	while (!$bad && $off < $len) {
		if ($skip) {
			my $n = $len - $off < $skip ? $len - $off : $skip;
			$skip -= $n;
			$off += $n;
			next;
		}
		my $want = 5 - length $pending;
		$pending .= substr($d, $off, $want);
		$off += $want;
		last if length $pending < 5;
		my ($type, $major, $rlen) = unpack('C C x n', $pending);
		$pending = '';
		if ($major != 3 || $type < 20 || $type > 24) {
			$bad = 1;
			last;
		}
		$count{records}++;
		$count{app}++ if $type == 23;
		$count{handshake}++ if $type == 22;
		$skip = $rlen;
	}
}

my $sel = IO::Select->new($a, $b);
my %peer = ($a => $b, $b => $a);
my $open = 2;
while ($open > 0) {
	for my $s ($sel->can_read) {
		my $n = sysread($s, my $buf, 262144);
		if (!$n) {
			# one direction ended: pass the FIN on
			$sel->remove($s);
			shutdown($peer{$s}, 1);
			$open--;
			next;
		}
		count($buf) if $s == $a;
		my $off = 0;
		while ($off < $n) {
			my $w = syswrite($peer{$s}, $buf, $n - $off, $off);
			last unless defined $w;	# the other end went away
			$off += $w;
		}
	}
}
open(my $f, '>', "$out.new") or die "tlsrec: $out: $!\n";
printf $f "records %d app %d handshake %d bytes %d%s\n", $count{records},
	$count{app}, $count{handshake}, $count{bytes}, $bad ? ' bad' : '';
close $f;
rename "$out.new", $out;
