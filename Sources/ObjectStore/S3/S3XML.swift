import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A parsed XML element: enough of a tree for S3's small response documents.
struct XMLNode: Sendable {
    var name: String
    var text: String = ""
    var children: [XMLNode] = []

    func child(_ name: String) -> XMLNode? { children.first { $0.name == name } }
    func children(_ name: String) -> [XMLNode] { children.filter { $0.name == name } }
    func value(_ name: String) -> String? { child(name)?.text }

    /// Parses a document; nil if it is not well-formed XML.
    static func parse(_ bytes: [UInt8]) -> XMLNode? {
        let builder = TreeBuilder()
        let parser = XMLParser(data: Data(bytes))
        parser.delegate = builder
        guard parser.parse(), let root = builder.root else { return nil }
        return root
    }
}

private final class TreeBuilder: NSObject, XMLParserDelegate {
    var stack: [XMLNode] = []
    var root: XMLNode?

    func parser(
        _ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
        qualifiedName: String?, attributes: [String: String] = [:]
    ) {
        stack.append(XMLNode(name: name))
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if !stack.isEmpty { stack[stack.count - 1].text += string }
    }

    func parser(
        _ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?
    ) {
        guard let done = stack.popLast() else { return }
        if stack.isEmpty { root = done } else { stack[stack.count - 1].children.append(done) }
    }
}

/// S3's response documents, decoded.
enum S3XML {
    struct ErrorBody: Equatable {
        var code: String?
        var message: String?
        var requestID: String?
    }

    /// `<Error><Code/><Message/><RequestId/></Error>`; nil if the body is not one.
    static func error(_ body: [UInt8]) -> ErrorBody? {
        guard !body.isEmpty, let root = XMLNode.parse(body), root.name == "Error" else { return nil }
        return ErrorBody(code: root.value("Code"), message: root.value("Message"), requestID: root.value("RequestId"))
    }

    struct ListPage: Equatable {
        var objects: [ObjectInfo]
        var nextContinuationToken: String?
    }

    /// A ListObjectsV2 result page.
    static func listPage(_ body: [UInt8]) -> ListPage? {
        guard let root = XMLNode.parse(body), root.name == "ListBucketResult" else { return nil }
        var objects: [ObjectInfo] = []
        for entry in root.children("Contents") {
            guard let key = entry.value("Key"), let size = entry.value("Size").flatMap({ UInt64($0) })
            else { return nil }
            objects.append(ObjectInfo(key: key, size: size, etag: entry.value("ETag")))
        }
        let truncated = root.value("IsTruncated") == "true"
        let token = truncated ? root.value("NextContinuationToken") : nil
        if truncated && (token ?? "").isEmpty { return nil }  // would loop forever
        return ListPage(objects: objects, nextContinuationToken: token)
    }

    static func uploadID(_ body: [UInt8]) -> String? {
        guard let root = XMLNode.parse(body), root.name == "InitiateMultipartUploadResult" else { return nil }
        return root.value("UploadId").flatMap { $0.isEmpty ? nil : $0 }
    }

    /// ListMultipartUploads: (key, upload id) pairs.
    static func uploads(_ body: [UInt8]) -> [(key: String, uploadID: String)]? {
        guard let root = XMLNode.parse(body), root.name == "ListMultipartUploadsResult" else { return nil }
        return root.children("Upload").compactMap { upload in
            guard let key = upload.value("Key"), let id = upload.value("UploadId") else { return nil }
            return (key, id)
        }
    }

    static func completeMultipartBody(etags: [String]) -> [UInt8] {
        var xml = "<CompleteMultipartUpload>"
        for (index, etag) in etags.enumerated() {
            xml += "<Part><PartNumber>\(index + 1)</PartNumber><ETag>\(escape(etag))</ETag></Part>"
        }
        xml += "</CompleteMultipartUpload>"
        return Array(xml.utf8)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
