"""Read messages with GMime 3 (through PyGObject) and print what a mail client shows, one
JSON line per file: the system Python runs this, with python3-gi and gir1.2-gmime-3.0."""

import json
import sys

import gi

gi.require_version("GMime", "3.0")
from gi.repository import GMime  # noqa: E402

GMime.init()


def addresses(message, kind):
    found = []
    for i in range(message.get_addresses(kind).length()):
        item = message.get_addresses(kind).get_address(i)
        if isinstance(item, GMime.InternetAddressMailbox):
            found.append([item.get_name() or "", item.get_addr()])
    return found


def main():
    for path in sys.argv[1:]:
        stream = GMime.StreamFile.open(path, "r")
        message = GMime.Parser.new_with_stream(stream).construct_message(None)
        text, files = None, []
        iterator = GMime.PartIter.new(message.get_mime_part())
        while True:
            part = iterator.get_current()
            if isinstance(part, GMime.Part):
                content = part.get_content()
                out = GMime.StreamMem.new()
                content.write_to_stream(out)
                data = bytes(out.get_byte_array())
                if part.get_filename() and not part.get_content_id():  # not an inline image
                    files.append([part.get_filename(), len(data)])
                elif part.get_content_type().get_mime_type() == "text/plain" and text is None:
                    charset = part.get_content_type().get_parameter("charset") or "utf-8"
                    text = data.decode(charset)
            if not iterator.next():
                break
        print(json.dumps({"file": path,
                          "from": addresses(message, GMime.AddressType.FROM),
                          "to": addresses(message, GMime.AddressType.TO),
                          "cc": addresses(message, GMime.AddressType.CC),
                          "subject": message.get_subject(), "text": text,
                          "attachments": files}, ensure_ascii=False))


main()
