#!/usr/bin/perl
# Read messages with Perl's Email::MIME and print what a mail client shows, one JSON line
# per file (Debian: libemail-mime-perl, libjson-pp-perl).
use strict;
use warnings;
use Email::MIME;
use JSON::PP;

binmode STDOUT, ":raw";
my $json = JSON::PP->new->canonical->utf8;

sub names {
    my ($email, $field) = @_;
    my $header = $email->header_as_obj($field) or return [];
    return [map { [$_->phrase // "", $_->address] } $header->addresses];
}

for my $path (@ARGV) {
    open my $fh, "<:raw", $path or die "$path: $!";
    my $raw = do { local $/; <$fh> };
    my $email = Email::MIME->new($raw);
    my ($text, @files);
    $email->walk_parts(sub {
        my ($part) = @_;
        return if $part->subparts;
        my $name = $part->filename;
        if (defined $name && !defined $part->header("Content-ID")) {  # not an inline image
            push @files, [$name, length($part->body)];
        } elsif (!defined $text && $part->content_type =~ m{^text/plain}i) {
            $text = $part->body_str;
        }
    });
    print $json->encode({
        file => $path, from => names($email, "From"), to => names($email, "To"),
        cc => names($email, "Cc"), subject => $email->header_str("Subject"),
        text => $text, attachments => \@files,
    }), "\n";
}
